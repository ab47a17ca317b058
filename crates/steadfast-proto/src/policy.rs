//! What a refusal or a disconnect means: the reason-code classes of the reconnect spec.
//!
//! A CONNACK refusal and a server's DISCONNECT are classified with the same table:
//!
//! | class | reason codes | behaviour |
//! |---|---|---|
//! | [`Fatal`](ReasonClass::Fatal) | 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C | no retry |
//! | [`SlowDown`](ReasonClass::SlowDown) | 0x89, 0x97, 0x9F | retry, delay at least `max / 4` |
//! | [`Redirect`](ReasonClass::Redirect) | 0x9C (temporary), 0x9D (permanent) | next attempt goes to the Server Reference |
//! | [`Takeover`](ReasonClass::Takeover) | 0x8E | report, then retry as for "slow down" |
//! | [`Transient`](ReasonClass::Transient) | everything else (0x80, 0x83, 0x88, 0x8B, 0x8D, 0x98, ...) | retry with backoff |
//!
//! MQTT 3.1.1 CONNACK return codes are first mapped onto the MQTT 5 names with
//! [`ReasonCode::from_v311_connack`], so they are classified by the same table: 1 (0x84), 2
//! (0x85), 4 (0x86) and 5 (0x87) are fatal, 3 (0x88, server unavailable) is transient.
//!
//! ```
//! use steadfast_proto::policy::{classify, ReasonClass};
//! use steadfast_proto::ReasonCode;
//!
//! // An MQTT 3.1.1 CONNACK with return code 4: bad user name or password.
//! let rc = ReasonCode::from_v311_connack(4).unwrap();
//! assert_eq!(rc, ReasonCode::BadUserNameOrPassword);
//! assert_eq!(classify(rc), ReasonClass::Fatal);
//! assert!(!classify(rc).retries());
//!
//! assert_eq!(classify(ReasonCode::ServerMoved), ReasonClass::Redirect { permanent: true });
//! ```

use core::fmt;

use crate::packet::ReasonCode;

/// How the client reacts to a reason code in a CONNACK refusal or a server's DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonClass {
    /// The broker will keep refusing (bad credentials, not authorized, banned, ...): report
    /// it and do not retry, unless a policy hook overrides this.
    Fatal,
    /// The broker is overloaded or rate-limiting: retry, with the delay jumped to at least
    /// `max / 4` of the backoff policy and still growing.
    SlowDown,
    /// The broker names another server (in the Server Reference property): connect there next.
    /// `permanent` (0x9D, server moved) means it replaces the configured server; 0x9C (use
    /// another server) is temporary. At most 3 redirects are followed in a row.
    Redirect {
        /// True for 0x9D "Server moved", false for 0x9C "Use another server".
        permanent: bool,
    },
    /// Another client connected with the same client identifier (0x8E): report the takeover,
    /// then retry as for [`SlowDown`](ReasonClass::SlowDown).
    Takeover,
    /// Anything else: retry with the normal backoff.
    Transient,
}

/// Classifies a reason code from a CONNACK or a server's DISCONNECT, per the reconnect spec.
///
/// Codes not listed as fatal, slow down, redirect or takeover are transient, including the
/// success codes (below 0x80) should one ever be passed here.
///
/// ```
/// use steadfast_proto::policy::{classify, ReasonClass};
/// use steadfast_proto::ReasonCode;
///
/// assert_eq!(classify(ReasonCode::NotAuthorized), ReasonClass::Fatal);
/// assert_eq!(classify(ReasonCode::ServerBusy), ReasonClass::SlowDown);
/// assert_eq!(classify(ReasonCode::UseAnotherServer), ReasonClass::Redirect { permanent: false });
/// assert_eq!(classify(ReasonCode::SessionTakenOver), ReasonClass::Takeover);
/// assert_eq!(classify(ReasonCode::ServerUnavailable), ReasonClass::Transient);
/// ```
pub const fn classify(code: ReasonCode) -> ReasonClass {
    match code {
        ReasonCode::UnsupportedProtocolVersion
        | ReasonCode::ClientIdentifierNotValid
        | ReasonCode::BadUserNameOrPassword
        | ReasonCode::NotAuthorized
        | ReasonCode::Banned
        | ReasonCode::BadAuthenticationMethod => ReasonClass::Fatal,
        ReasonCode::ServerBusy | ReasonCode::QuotaExceeded | ReasonCode::ConnectionRateExceeded => {
            ReasonClass::SlowDown
        }
        ReasonCode::UseAnotherServer => ReasonClass::Redirect { permanent: false },
        ReasonCode::ServerMoved => ReasonClass::Redirect { permanent: true },
        ReasonCode::SessionTakenOver => ReasonClass::Takeover,
        _ => ReasonClass::Transient,
    }
}

impl ReasonClass {
    /// Whether the client tries to connect again by itself: false only for
    /// [`Fatal`](ReasonClass::Fatal). (A redirect counts as a retry, to another server.)
    ///
    /// ```
    /// use steadfast_proto::policy::ReasonClass;
    /// assert!(!ReasonClass::Fatal.retries());
    /// assert!(ReasonClass::Takeover.retries());
    /// ```
    pub const fn retries(self) -> bool {
        !matches!(self, ReasonClass::Fatal)
    }

    /// The class's name, as printed by `Display`: "fatal", "slow down", "redirect",
    /// "takeover" or "transient".
    pub const fn name(self) -> &'static str {
        match self {
            ReasonClass::Fatal => "fatal",
            ReasonClass::SlowDown => "slow down",
            ReasonClass::Redirect { .. } => "redirect",
            ReasonClass::Takeover => "takeover",
            ReasonClass::Transient => "transient",
        }
    }
}

impl fmt::Display for ReasonClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ReasonClass::*;

    /// The spec's table, written out independently by code number: every code MQTT 5 defines.
    const EXPECTED: &[(u8, ReasonClass)] = &[
        (0x00, Transient),
        (0x01, Transient),
        (0x02, Transient),
        (0x04, Transient),
        (0x10, Transient),
        (0x11, Transient),
        (0x18, Transient),
        (0x19, Transient),
        (0x80, Transient),
        (0x81, Transient),
        (0x82, Transient),
        (0x83, Transient),
        (0x84, Fatal),
        (0x85, Fatal),
        (0x86, Fatal),
        (0x87, Fatal),
        (0x88, Transient),
        (0x89, SlowDown),
        (0x8A, Fatal),
        (0x8B, Transient),
        (0x8C, Fatal),
        (0x8D, Transient),
        (0x8E, Takeover),
        (0x8F, Transient),
        (0x90, Transient),
        (0x91, Transient),
        (0x92, Transient),
        (0x93, Transient),
        (0x94, Transient),
        (0x95, Transient),
        (0x96, Transient),
        (0x97, SlowDown),
        (0x98, Transient),
        (0x99, Transient),
        (0x9A, Transient),
        (0x9B, Transient),
        (0x9C, Redirect { permanent: false }),
        (0x9D, Redirect { permanent: true }),
        (0x9E, Transient),
        (0x9F, SlowDown),
        (0xA0, Transient),
        (0xA1, Transient),
        (0xA2, Transient),
    ];

    #[test]
    fn every_reason_code_is_classified_as_the_table_says() {
        assert_eq!(ReasonCode::ALL.len(), EXPECTED.len());
        for &rc in ReasonCode::ALL {
            let want = EXPECTED
                .iter()
                .find(|(code, _)| *code == rc.code())
                .unwrap_or_else(|| panic!("{rc:?} missing from the expected table"))
                .1;
            assert_eq!(classify(rc), want, "{:#04x} {rc}", rc.code());
        }
        for &(code, want) in EXPECTED {
            let rc = ReasonCode::try_from(code).expect("expected table names a defined code");
            assert_eq!(classify(rc), want);
        }
    }

    #[test]
    fn the_spec_table_row_by_row() {
        let rows: [(&[u8], ReasonClass); 6] = [
            (&[0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C], Fatal),
            (&[0x89, 0x97, 0x9F], SlowDown),
            (&[0x9C], Redirect { permanent: false }),
            (&[0x9D], Redirect { permanent: true }),
            (&[0x8E], Takeover),
            (&[0x80, 0x83, 0x88, 0x8B, 0x8D, 0x98], Transient),
        ];
        for (codes, class) in rows {
            for &c in codes {
                assert_eq!(
                    classify(ReasonCode::try_from(c).unwrap()),
                    class,
                    "{c:#04x}"
                );
            }
        }
        let fatal = ReasonCode::ALL
            .iter()
            .filter(|&&rc| classify(rc) == Fatal)
            .count();
        assert_eq!(fatal, 6);
    }

    #[test]
    fn v311_connack_return_codes_classify_through_their_v5_names() {
        let want = [
            (1, Fatal),
            (2, Fatal),
            (3, Transient),
            (4, Fatal),
            (5, Fatal),
        ];
        for (rc, class) in want {
            let code = ReasonCode::from_v311_connack(rc).unwrap();
            assert_eq!(classify(code), class, "3.1.1 return code {rc}");
        }
        assert_eq!(
            ReasonCode::from_v311_connack(4).map(classify),
            Some(Fatal),
            "bad user name or password"
        );
    }

    #[test]
    fn retries_and_display() {
        assert!(!Fatal.retries());
        for c in [
            SlowDown,
            Redirect { permanent: false },
            Redirect { permanent: true },
            Takeover,
            Transient,
        ] {
            assert!(c.retries(), "{c}");
        }
        let names: Vec<String> = [
            Fatal,
            SlowDown,
            Redirect { permanent: true },
            Takeover,
            Transient,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            ["fatal", "slow down", "redirect", "takeover", "transient"]
        );
        assert_eq!(Redirect { permanent: false }.to_string(), "redirect");
    }
}
