//! Subscribe and unsubscribe requests: packet ids, splitting to fit the broker's Maximum Packet
//! Size, the subscription registry, and the restore of subscriptions after a session is lost.

use super::*;

/// A pending subscribe or unsubscribe request.
#[derive(Debug, Clone)]
pub(super) enum Request {
    Subscribe { token: Token, packet: Subscribe },
    Unsubscribe { token: Token, packet: Unsubscribe },
}

impl Request {
    pub(super) fn token(&self) -> Token {
        match self {
            Request::Subscribe { token, .. } | Request::Unsubscribe { token, .. } => *token,
        }
    }
}

/// Requests split into several packets to fit the broker's Maximum Packet Size (after a
/// reconnect to a broker with a smaller limit). Each part goes out as a request of its own,
/// under a token of its own; the original token completes once every part has, with the
/// reason codes in the original order, or with the first error.
#[derive(Debug, Default)]
pub(super) struct Splits {
    /// Part token: (the token it is part of, its index there).
    part_of: HashMap<Token, (Token, usize)>,
    /// Token split into parts: each part's reason codes once known. Removed on the first error,
    /// so later parts complete nothing.
    results: HashMap<Token, Vec<Option<Vec<ReasonCode>>>>,
}

impl Splits {
    fn split(&mut self, whole: Token, parts: &[Token]) {
        for (i, part) in parts.iter().enumerate() {
            self.part_of.insert(*part, (whole, i));
        }
        self.results.insert(whole, vec![None; parts.len()]);
    }

    /// A part finished: the result of the whole it belongs to when that is now known.
    fn part_done(
        &mut self,
        part: Token,
        result: Result<Vec<ReasonCode>, CommandError>,
    ) -> Option<(Token, Result<Vec<ReasonCode>, CommandError>)> {
        let Some((whole, i)) = self.part_of.remove(&part) else {
            return Some((part, result));
        };
        let codes = match result {
            Ok(codes) => codes,
            Err(e) => {
                return self.results.remove(&whole).map(|_| (whole, Err(e)));
            }
        };
        let slots = self.results.get_mut(&whole)?;
        *slots.get_mut(i)? = Some(codes);
        if slots.iter().any(Option::is_none) {
            return None;
        }
        let slots = self.results.remove(&whole)?;
        Some((whole, Ok(slots.into_iter().flatten().flatten().collect())))
    }
}

/// Splits `items` in order into runs of at most `max_run` whose packet passes `check`. Items
/// that fail it even alone are returned apart, in order, with the error.
fn split_to_fit<T: Clone, E>(
    items: &[T],
    max_run: usize,
    check: impl Fn(&[T]) -> Result<(), E>,
) -> (Vec<Vec<T>>, Vec<(T, E)>) {
    let mut runs = Vec::new();
    let mut unfit = Vec::new();
    let mut run: Vec<T> = Vec::new();
    for item in items {
        run.push(item.clone());
        if run.len() <= max_run && check(&run).is_ok() {
            continue;
        }
        run.pop();
        if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
        match check(std::slice::from_ref(item)) {
            Ok(()) => run.push(item.clone()),
            Err(e) => unfit.push((item.clone(), e)),
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    (runs, unfit)
}

/// A restore of subscriptions under way (after a connect without a session): the SUBSCRIBEs
/// not answered yet, and what the broker granted so far.
#[derive(Debug, Default)]
pub(super) struct Resubscribing {
    /// Packet id of each unanswered SUBSCRIBE, with its filters in packet order.
    pending: Vec<(u16, Vec<ByteStr>)>,
    /// Filters granted so far.
    filters: Vec<ByteStr>,
    /// Their SUBACK codes.
    granted: Vec<ReasonCode>,
}

impl Connection {
    /// Subscribes to `filters`. The filters enter the registry at once, so they are restored
    /// after any reconnect in which the broker has no session. [`Event::SubscribeDone`] reports
    /// the SUBACK.
    ///
    /// While connected, a SUBSCRIBE larger than the broker's Maximum Packet Size is refused
    /// here ([`CommandError::PacketTooLarge`]). A request that waits for a connection (or is
    /// sent again after a reconnect) is split into several SUBSCRIBE packets if the broker it
    /// meets has a smaller limit, and fails with that error only if a single filter does not
    /// fit; the same holds for [`Connection::unsubscribe`].
    pub fn subscribe(
        &mut self,
        filters: Vec<SubscribeFilter>,
        mut properties: Properties,
        now: Instant,
    ) -> Result<Token, CommandError> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err(CommandError::Closed);
        }
        if filters.is_empty() {
            return Err(CommandError::Invalid(InvalidCommand::NoFilters));
        }
        for f in &filters {
            TopicFilter::new(f.filter.clone()).map_err(|error| {
                CommandError::Invalid(InvalidCommand::Filter {
                    filter: f.filter.clone(),
                    error,
                })
            })?;
        }
        let v5 = self.config.protocol == ProtocolVersion::V5;
        if !v5 {
            if !properties.is_empty() {
                return Err(CommandError::Invalid(InvalidCommand::NeedsV5 {
                    what: "subscribe properties",
                }));
            }
            if filters.iter().any(|f| {
                f.options.no_local
                    || f.options.retain_as_published
                    || f.options.retain_handling != crate::RetainHandling::SendAtSubscribe
            }) {
                return Err(CommandError::Invalid(InvalidCommand::NeedsV5 {
                    what: "no_local, retain_as_published and retain_handling",
                }));
            }
        }
        if !properties.subscription_identifiers.is_empty() {
            return Err(CommandError::Invalid(
                InvalidCommand::SubscriptionIdentifierSet,
            ));
        }
        let id = if v5 && self.config.subscription_identifiers {
            self.next_sub_id = if self.next_sub_id >= PROTOCOL_MAX_REMAINING {
                1
            } else {
                self.next_sub_id + 1
            };
            properties.subscription_identifiers.push(self.next_sub_id);
            Some(self.next_sub_id)
        } else {
            None
        };
        self.check_request_size(&Request::Subscribe {
            token: Token(0),
            packet: Subscribe {
                pkid: 0,
                filters: filters.clone(),
                properties: properties.clone().into(),
            },
        })?;
        for f in &filters {
            self.registry.insert(Subscription {
                filter: f.filter.clone(),
                options: f.options,
                id,
                user_properties: properties.user_properties.clone(),
                confirmed: false,
            });
        }
        let token = self.token();
        let packet = Subscribe {
            pkid: 0,
            filters,
            properties: properties.into(),
        };
        self.requests
            .push_back(Request::Subscribe { token, packet });
        self.pump(now);
        Ok(token)
    }

    /// Unsubscribes. The filters leave the registry at once, so a reconnect does not restore
    /// them. [`Event::UnsubscribeDone`] reports the UNSUBACK.
    pub fn unsubscribe(
        &mut self,
        filters: Vec<ByteStr>,
        properties: Properties,
        now: Instant,
    ) -> Result<Token, CommandError> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err(CommandError::Closed);
        }
        if filters.is_empty() {
            return Err(CommandError::Invalid(InvalidCommand::NoFilters));
        }
        if self.config.protocol == ProtocolVersion::V311 && !properties.is_empty() {
            return Err(CommandError::Invalid(InvalidCommand::NeedsV5 {
                what: "unsubscribe properties",
            }));
        }
        self.check_request_size(&Request::Unsubscribe {
            token: Token(0),
            packet: Unsubscribe {
                pkid: 0,
                filters: filters.clone(),
                properties: properties.clone().into(),
            },
        })?;
        for f in &filters {
            TopicFilter::new(f.clone()).map_err(|error| {
                CommandError::Invalid(InvalidCommand::Filter {
                    filter: f.clone(),
                    error,
                })
            })?;
            if self.registry.remove(f).is_some() {
                self.store(|| StoreOp::SubscriptionRemove(f.clone()));
            }
        }
        let token = self.token();
        let packet = Unsubscribe {
            pkid: 0,
            filters,
            properties: properties.into(),
        };
        self.requests
            .push_back(Request::Unsubscribe { token, packet });
        self.pump(now);
        Ok(token)
    }

    pub(super) fn resubscribe(&mut self, now: Instant) {
        let confirmed: Vec<Subscription> = self
            .registry
            .iter()
            .filter(|s| s.confirmed)
            .cloned()
            .collect();
        if confirmed.is_empty() {
            return;
        }
        // One SUBSCRIBE per subscription identifier (MQTT 5 allows one id per packet).
        let mut groups: Vec<(Option<u32>, Vec<Subscription>)> = Vec::new();
        for s in confirmed {
            match groups.iter_mut().find(|(id, _)| *id == s.id) {
                Some((_, g)) => g.push(s),
                None => groups.push((s.id, vec![s])),
            }
        }
        let mut unfit = Vec::new();
        let mut pending = Vec::new();
        for (id, subs) in groups {
            // As many packets as this broker's Maximum Packet Size takes.
            let (chunks, too_large) = split_to_fit(&subs, 64, |c| {
                match self.too_large(&Packet::Subscribe(self.resubscribe_packet(id, c, 1))) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            });
            unfit.extend(too_large);
            for chunk in chunks {
                let Some(pkid) = self.pkids.alloc(Owner::Resubscribe) else {
                    break;
                };
                let packet = self.resubscribe_packet(id, &chunk, pkid);
                self.send_packet(&Packet::Subscribe(packet), now);
                pending.push((pkid, chunk.into_iter().map(|s| s.filter).collect()));
            }
        }
        if !pending.is_empty() {
            // `Resubscribed` follows once every SUBACK is in (`on_resubscribe_ack`).
            self.resubscribing = Some(Box::new(Resubscribing {
                pending,
                ..Resubscribing::default()
            }));
        }
        for (s, error) in unfit {
            let filter = s.filter;
            self.emit(now, Lifecycle::ResubscribeFailed { filter, error });
        }
    }

    /// The SUBSCRIBE that restores `subs` (which share the subscription identifier `id`).
    pub(super) fn resubscribe_packet(
        &self,
        id: Option<u32>,
        subs: &[Subscription],
        pkid: u16,
    ) -> Subscribe {
        let mut properties = Properties::default();
        if self.config.protocol == ProtocolVersion::V5 {
            if let Some(id) = id {
                properties.subscription_identifiers.push(id);
            }
            if let Some(first) = subs.first() {
                properties.user_properties = first.user_properties.clone();
            }
        }
        let filters = subs
            .iter()
            .map(|s| SubscribeFilter {
                filter: s.filter.clone(),
                options: s.options,
            })
            .collect();
        let mut packet = Subscribe {
            pkid,
            filters,
            properties: properties.into(),
        };
        self.strip_sub_ids(&mut packet);
        packet
    }

    pub(super) fn strip_sub_ids(&self, packet: &mut Subscribe) {
        if self.link.as_ref().is_some_and(|l| !l.sub_ids_available) {
            if let Some(p) = packet.properties.get_mut() {
                p.subscription_identifiers.clear();
            }
        }
    }

    /// The packet a request goes out as, with packet id `pkid`.
    pub(super) fn request_packet(&self, req: &Request, pkid: u16) -> Packet {
        match req {
            Request::Subscribe { packet, .. } => {
                let mut p = packet.clone();
                p.pkid = pkid;
                self.strip_sub_ids(&mut p);
                Packet::Subscribe(p)
            }
            Request::Unsubscribe { packet, .. } => {
                let mut p = packet.clone();
                p.pkid = pkid;
                Packet::Unsubscribe(p)
            }
        }
    }

    /// Why `packet` must not be sent: it exceeds the broker's Maximum Packet Size.
    pub(super) fn too_large(&self, packet: &Packet) -> Option<CommandError> {
        let max = self.peer_max_packet_size()?;
        // A packet that cannot be encoded at all fails where it is encoded, with that error.
        let size = packet.encoded_len(self.config.protocol).ok()?;
        (size > max as usize).then_some(CommandError::PacketTooLarge {
            packet: packet.packet_type(),
            size,
            max,
        })
    }

    /// Whether a request fits in one packet (measured with a stand-in packet id).
    pub(super) fn check_request_size(&self, req: &Request) -> Result<(), CommandError> {
        match self.too_large(&self.request_packet(req, 1)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `filters` in runs that each fit one packet (`part` builds the request for a run), and the
    /// error of the first filter that fits none.
    pub(super) fn split_request<F: Clone>(
        &self,
        filters: &[F],
        part: impl Fn(&[F]) -> Request,
    ) -> (Vec<Request>, Option<CommandError>) {
        let (runs, unfit) =
            split_to_fit(filters, usize::MAX, |f| self.check_request_size(&part(f)));
        let error = unfit.into_iter().next().map(|(_, e)| e);
        (runs.iter().map(|r| part(r)).collect(), error)
    }

    /// A request about to be sent: as it is when it fits, else split into parts that fit (the
    /// first is returned, the others go to the front of the queue). When a single filter does
    /// not fit the request fails and `None` is returned.
    pub(super) fn fit_request(&mut self, req: Request) -> Option<Request> {
        let Err(whole) = self.check_request_size(&req) else {
            return Some(req);
        };
        let token = req.token();
        let (mut parts, error) = match &req {
            Request::Subscribe { packet, .. } => {
                let part = |filters: &[SubscribeFilter]| Request::Subscribe {
                    token,
                    packet: Subscribe {
                        pkid: 0,
                        filters: filters.to_vec(),
                        properties: packet.properties.clone(),
                    },
                };
                self.split_request(&packet.filters, part)
            }
            Request::Unsubscribe { packet, .. } => {
                let part = |filters: &[ByteStr]| Request::Unsubscribe {
                    token,
                    packet: Unsubscribe {
                        pkid: 0,
                        filters: filters.to_vec(),
                        properties: packet.properties.clone(),
                    },
                };
                self.split_request(&packet.filters, part)
            }
        };
        let error = match error {
            None if parts.is_empty() => Some(whole),
            e => e,
        };
        if let Some(error) = error {
            // A filter does not fit even alone: nothing of the request is sent.
            let subscribe = matches!(req, Request::Subscribe { .. });
            if let Request::Subscribe { packet, .. } = &req {
                self.forget_subscribe(packet);
            }
            self.request_done(subscribe, token, Err(error));
            return None;
        }
        let tokens: Vec<Token> = parts.iter().map(|_| self.token()).collect();
        self.splits.split(token, &tokens);
        for (part, t) in parts.iter_mut().zip(&tokens) {
            match part {
                Request::Subscribe { token, .. } | Request::Unsubscribe { token, .. } => {
                    *token = *t
                }
            }
        }
        let mut parts = parts.into_iter();
        let first = parts.next();
        for part in parts.rev() {
            self.requests.push_front(part);
        }
        first
    }

    /// A subscribe that will not be sent leaves the registry, as if the broker had refused it.
    pub(super) fn forget_subscribe(&mut self, packet: &Subscribe) {
        let ids = &packet.properties.subscription_identifiers;
        for f in &packet.filters {
            let ours = self
                .registry
                .get(&f.filter)
                .is_some_and(|e| ids.is_empty() || e.id == ids.first().copied());
            if ours && self.registry.remove(&f.filter).is_some() {
                let filter = f.filter.clone();
                self.store(|| StoreOp::SubscriptionRemove(filter));
            }
        }
    }

    /// Reports a finished subscribe or unsubscribe; a part of a split request completes the
    /// whole once every part has.
    pub(super) fn request_done(
        &mut self,
        subscribe: bool,
        mut token: Token,
        mut result: Result<Vec<ReasonCode>, CommandError>,
    ) {
        loop {
            let Some((whole, r)) = self.splits.part_done(token, result) else {
                return;
            };
            if whole != token {
                // A part of a part (split again on a later connection): go up once more.
                token = whole;
                result = r;
                continue;
            }
            self.events.push_back(if subscribe {
                Event::SubscribeDone { token, result: r }
            } else {
                Event::UnsubscribeDone { token, result: r }
            });
            return;
        }
    }

    /// The request a SUBACK or UNSUBACK answers; the map's room is given back once it empties.
    pub(super) fn take_sent_request(&mut self, pkid: u16) -> Option<Request> {
        let req = self.sent_requests.remove(&pkid);
        if self.sent_requests.is_empty() {
            self.sent_requests = IdMap::default();
        }
        req
    }

    pub(super) fn on_suback(&mut self, s: SubAck, now: Instant) {
        match self.pkids.release(s.pkid) {
            Some(Owner::Subscribe(token)) => {
                let Some(Request::Subscribe { packet, .. }) = self.take_sent_request(s.pkid) else {
                    return;
                };
                if s.reasons.len() != packet.filters.len() {
                    let detail = format!(
                        "SUBACK has {} codes for {} filters",
                        s.reasons.len(),
                        packet.filters.len()
                    );
                    // Keep the request: the link closes and it is sent again on the next one
                    // (otherwise its token would never complete).
                    self.pkids.claim(s.pkid, Owner::Subscribe(token));
                    self.sent_requests
                        .insert(s.pkid, Request::Subscribe { token, packet });
                    self.protocol_violation(ReasonCode::ProtocolError, detail, now);
                    return;
                }
                for (f, rc) in packet.filters.iter().zip(&s.reasons) {
                    let ours = self.registry.get(&f.filter).is_some_and(|e| {
                        e.id == packet.properties.subscription_identifiers.first().copied()
                            || packet.properties.subscription_identifiers.is_empty()
                    });
                    if !ours {
                        continue;
                    }
                    if rc.is_success() {
                        if let Some(e) = self.registry.get_mut(&f.filter) {
                            e.confirmed = true;
                            let sub = e.clone();
                            self.store(|| StoreOp::SubscriptionUpsert(sub));
                        }
                    } else if self.registry.remove(&f.filter).is_some() {
                        self.store(|| StoreOp::SubscriptionRemove(f.filter.clone()));
                    }
                }
                self.request_done(true, token, Ok(s.reasons));
            }
            Some(Owner::Resubscribe) => self.on_resubscribe_ack(s, now),
            Some(other) => {
                self.pkids.claim(s.pkid, other);
                self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!("SUBACK for packet id {} that is not a SUBSCRIBE", s.pkid),
                    now,
                );
            }
            None => {}
        }
    }

    /// The SUBACK of a restore: refused filters leave the registry (nothing arrives for them
    /// any more) and are reported one by one; `Resubscribed` reports what was granted once the
    /// last SUBACK of the restore is in.
    pub(super) fn on_resubscribe_ack(&mut self, s: SubAck, now: Instant) {
        let Some(r) = self.resubscribing.as_mut() else {
            return;
        };
        let Some(i) = r.pending.iter().position(|(pkid, _)| *pkid == s.pkid) else {
            return;
        };
        let expected = r.pending[i].1.len();
        if s.reasons.len() != expected {
            let detail = format!(
                "SUBACK has {} codes for {expected} filters",
                s.reasons.len()
            );
            self.pkids.claim(s.pkid, Owner::Resubscribe);
            self.protocol_violation(ReasonCode::ProtocolError, detail, now);
            return;
        }
        let (_, filters) = r.pending.remove(i);
        let mut refused = Vec::new();
        for (filter, rc) in filters.into_iter().zip(s.reasons) {
            if rc.is_success() {
                r.filters.push(filter);
                r.granted.push(rc);
            } else {
                refused.push((filter, rc));
            }
        }
        let done = r.pending.is_empty();
        for (filter, rc) in refused {
            // Only the restored entry: a newer subscribe of the same filter is the application's.
            if self.registry.get(&filter).is_some_and(|e| e.confirmed) {
                self.registry.remove(&filter);
                self.store(|| StoreOp::SubscriptionRemove(filter.clone()));
            }
            let error = CommandError::Refused(rc);
            self.emit(now, Lifecycle::ResubscribeFailed { filter, error });
        }
        if done {
            if let Some(r) = self.resubscribing.take() {
                let Resubscribing {
                    filters, granted, ..
                } = *r;
                if !filters.is_empty() {
                    self.emit(now, Lifecycle::Resubscribed { filters, granted });
                }
            }
        }
    }

    pub(super) fn on_unsuback(&mut self, u: UnsubAck, now: Instant) {
        match self.pkids.release(u.pkid) {
            Some(Owner::Unsubscribe(token)) => {
                let n = match self.take_sent_request(u.pkid) {
                    Some(Request::Unsubscribe { packet, .. }) => {
                        if let Some(detail) = self.unsuback_count_error(&u, &packet) {
                            // Keep the request, as for a SUBACK with the wrong count.
                            self.pkids.claim(u.pkid, Owner::Unsubscribe(token));
                            self.sent_requests
                                .insert(u.pkid, Request::Unsubscribe { token, packet });
                            self.protocol_violation(ReasonCode::ProtocolError, detail, now);
                            return;
                        }
                        packet.filters.len()
                    }
                    _ => 0,
                };
                let reasons = if u.reasons.is_empty() {
                    vec![ReasonCode::Success; n]
                } else {
                    u.reasons
                };
                self.request_done(false, token, Ok(reasons));
            }
            Some(other) => {
                self.pkids.claim(u.pkid, other);
                self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!(
                        "UNSUBACK for packet id {} that is not an UNSUBSCRIBE",
                        u.pkid
                    ),
                    now,
                );
            }
            None => {}
        }
    }

    /// An MQTT 5 UNSUBACK must carry one reason code per filter of the UNSUBSCRIBE (section
    /// 3.11.3); a 3.1.1 UNSUBACK carries none.
    pub(super) fn unsuback_count_error(
        &self,
        u: &UnsubAck,
        packet: &Unsubscribe,
    ) -> Option<String> {
        let expected = match self.config.protocol {
            ProtocolVersion::V5 => packet.filters.len(),
            ProtocolVersion::V311 => 0,
        };
        (u.reasons.len() != expected).then(|| {
            format!(
                "UNSUBACK has {} codes for {} filters",
                u.reasons.len(),
                packet.filters.len()
            )
        })
    }
}
