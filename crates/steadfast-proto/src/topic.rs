//! Validated topic names and topic filters (MQTT 5.0 section 4.7, 3.1.1 section 4.7), and
//! topic filter matching.
//!
//! ```
//! use steadfast_proto::topic::{matches, TopicFilter, TopicName};
//!
//! let name = TopicName::new("sport/tennis/player1").unwrap();
//! let filter: TopicFilter = "sport/tennis/+".parse().unwrap();
//! assert!(filter.matches(name.as_str()));
//! assert!(matches("sport/#", "sport"));
//! assert!(TopicName::new("sport/+").is_err());
//! assert!(TopicFilter::new("sport/tennis#").is_err());
//!
//! let shared = TopicFilter::new("$share/group/sensors/#").unwrap();
//! assert_eq!(shared.share_name(), Some("group"));
//! assert_eq!(shared.topic_filter(), "sensors/#");
//! assert!(shared.matches("sensors/1/temp"));
//! ```

use core::{fmt, ops::Deref, str::FromStr};

use crate::codec::ByteStr;

/// The longest topic, in bytes (the length prefix is a `u16`).
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters are at least one character long.
    Empty,
    /// Longer than 65,535 bytes.
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// Contains U+0000.
    NullCharacter,
    /// A topic name contains `+` or `#`.
    WildcardInName,
    /// `#` is not alone in its level, or not in the last level.
    MisplacedMultiLevelWildcard,
    /// `+` is not alone in its level.
    MisplacedSingleLevelWildcard,
    /// `$share/` followed by an empty share name.
    EmptyShareName,
    /// The share name of a `$share/` filter contains `+` or `#`.
    InvalidShareName,
    /// A `$share/{ShareName}` filter without a `/` and a non-empty topic filter after it.
    MissingSharedFilter,
}

impl TopicError {
    /// A short description, e.g. `"contains a wildcard"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TopicError::Empty => "is empty",
            TopicError::TooLong { .. } => "is longer than 65535 bytes",
            TopicError::NullCharacter => "contains U+0000",
            TopicError::WildcardInName => "contains a wildcard",
            TopicError::MisplacedMultiLevelWildcard => {
                "has a '#' that is not alone in the last level"
            }
            TopicError::MisplacedSingleLevelWildcard => "has a '+' that is not alone in its level",
            TopicError::EmptyShareName => "has an empty share name",
            TopicError::InvalidShareName => "has a share name containing '+' or '#'",
            TopicError::MissingSharedFilter => "is a shared subscription without a topic filter",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::TooLong { len } => write!(f, "topic is {len} bytes, longer than 65535"),
            other => write!(f, "topic {}", other.as_str()),
        }
    }
}

impl std::error::Error for TopicError {}

/// Lets an API bound its topic arguments by `T: TryInto<TopicName>, T::Error: Into<TopicError>`
/// and still take an already validated [`TopicName`] or [`TopicFilter`] (whose conversion into
/// itself cannot fail).
impl From<core::convert::Infallible> for TopicError {
    fn from(never: core::convert::Infallible) -> Self {
        match never {}
    }
}

/// Exact: is there a `+` or `#` (first), a NUL (second)? Only runs when [`maybe_special`]
/// says there might be.
fn scan(b: &[u8]) -> (bool, bool) {
    (b.iter().any(|&c| c == b'+' || c == b'#'), b.contains(&0))
}

/// Might `b` contain `+`, `#` or NUL? Never false when it does; true also for 0x08 (which maps
/// onto NUL below), which the exact [`scan`] then clears.
///
/// This runs for every PUBLISH encoded or decoded, and a plain byte loop does not vectorise:
/// SSE2 (16 bytes per step) on x86-64, SWAR (8 bytes per step) elsewhere and for short inputs.
/// Clearing bit 3 maps `+` (0x2B) onto `#` (0x23) and 0x08 onto NUL, so each step is two
/// comparisons.
#[inline(always)]
fn maybe_special(b: &[u8]) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if b.len() >= 16 {
        return sse2::maybe_special(b);
    }
    swar::maybe_special(b)
}

mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NOT_BIT3: u64 = LO * 0xF7;
    const HASH: u64 = LO * b'#' as u64;

    /// Non-zero iff some byte of `x` is zero (exact for "any", which is all we need).
    #[inline(always)]
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }

    #[inline(always)]
    fn step(x: u64) -> u64 {
        let y = x & NOT_BIT3;
        zero_byte(y ^ HASH) | zero_byte(y)
    }

    #[inline(always)]
    fn load(c: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    }

    #[inline]
    pub(super) fn maybe_special(b: &[u8]) -> bool {
        let mut acc = 0u64;
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            acc |= step(load(c));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let x = match b.len().checked_sub(8).and_then(|start| b.get(start..)) {
                // Re-read the last eight bytes: overlapping is harmless (the results are
                // OR-ed), and a fixed-size load avoids a store-forwarding stall.
                Some(last8) => load(last8),
                // Shorter than eight bytes: pad with 'a', which is none of the three.
                None => rest
                    .iter()
                    .enumerate()
                    .fold(LO * u64::from(b'a'), |acc, (i, &c)| {
                        let shift = 8 * (i as u32 & 7);
                        (acc & !(0xFF << shift)) | (u64::from(c) << shift)
                    }),
            };
            acc |= step(x);
        }
        acc != 0
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use core::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };

    /// For `b.len() >= 16`.
    #[inline(always)]
    pub(super) fn maybe_special(b: &[u8]) -> bool {
        // SAFETY: this module is only compiled when SSE2 is enabled at compile time (see its
        // `cfg`; SSE2 is part of the x86-64 baseline), which is all the intrinsics need, and
        // every `_mm_loadu_si128` reads a 16-byte subslice of `b` (unaligned loads are allowed).
        unsafe {
            let not_bit3 = _mm_set1_epi8(0xF7u8 as i8);
            let hash = _mm_set1_epi8(b'#' as i8);
            let zero = _mm_setzero_si128();
            let mut acc = zero;
            let mut step = |c: &[u8]| {
                debug_assert_eq!(c.len(), 16);
                let v = _mm_and_si128(_mm_loadu_si128(c.as_ptr().cast::<__m128i>()), not_bit3);
                let hit = _mm_or_si128(_mm_cmpeq_epi8(v, hash), _mm_cmpeq_epi8(v, zero));
                acc = _mm_or_si128(acc, hit);
            };
            let mut chunks = b.chunks_exact(16);
            for c in &mut chunks {
                step(c);
            }
            if !chunks.remainder().is_empty() {
                // Re-read the last sixteen bytes (overlap is harmless: results are OR-ed).
                if let Some(last) = b.len().checked_sub(16).and_then(|start| b.get(start..)) {
                    step(last);
                }
            }
            _mm_movemask_epi8(acc) != 0
        }
    }
}

/// Checks bytes of a topic name for U+0000 and wildcards (not the length, nor emptiness).
#[inline(always)]
pub(crate) fn check_name_allow_empty_bytes(b: &[u8]) -> Result<(), TopicError> {
    if !maybe_special(b) {
        return Ok(());
    }
    check_name_slow(b)
}

#[cold]
#[inline(never)]
fn check_name_slow(b: &[u8]) -> Result<(), TopicError> {
    match scan(b) {
        (_, true) => Err(TopicError::NullCharacter),
        (true, _) => Err(TopicError::WildcardInName),
        _ => Ok(()),
    }
}

/// Validates a topic name, except for emptiness (a PUBLISH with a topic alias has an empty one).
#[inline]
pub(crate) fn check_name_allow_empty(s: &str) -> Result<(), TopicError> {
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    check_name_allow_empty_bytes(s.as_bytes())
}

/// Validates a topic name: non-empty, at most 65,535 bytes, no U+0000, no wildcard.
pub fn validate_name(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    check_name_allow_empty(s)
}

/// Validates a topic filter, including the `$share/{ShareName}/{filter}` form.
pub fn validate_filter(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    let (wild, nul) = if maybe_special(s.as_bytes()) {
        scan(s.as_bytes())
    } else {
        (false, false)
    };
    if nul {
        return Err(TopicError::NullCharacter);
    }
    let inner = match split_shared(s)? {
        Some((_, inner)) => inner,
        None => s,
    };
    if wild {
        check_wildcards(inner)?;
    }
    Ok(())
}

/// For a `$share/` filter, `(share name, inner filter)`, validated except for the inner
/// filter's wildcards.
fn split_shared(s: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((share, inner)) = rest.split_once('/') else {
        return if rest.is_empty() {
            Err(TopicError::EmptyShareName)
        } else {
            Err(TopicError::MissingSharedFilter)
        };
    };
    if share.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    if share.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    Ok(Some((share, inner)))
}

fn check_wildcards(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// The filter a (possibly shared) filter matches with: the part after `$share/{ShareName}/`.
#[inline]
fn inner_filter(filter: &str) -> &str {
    match filter
        .strip_prefix(SHARE_PREFIX)
        .and_then(|r| r.split_once('/'))
    {
        Some((_, inner)) => inner,
        None => filter,
    }
}

/// Does `filter` match the topic name `topic` (section 4.7)?
///
/// `+` matches exactly one level, `#` any number of levels including the parent (`sport/#`
/// matches `sport`), topics starting with `$` are not matched by a filter starting with a
/// wildcard, and a `$share/{ShareName}/{filter}` filter matches as `{filter}`. The arguments are
/// not validated; use [`TopicFilter::matches`] for a validated filter. No allocation.
///
/// ```
/// use steadfast_proto::topic::matches;
/// assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
/// assert!(matches("+/+", "/finance"));
/// assert!(!matches("+", "/finance"));
/// assert!(!matches("#", "$SYS/uptime"));
/// ```
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = inner_filter(filter);
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

macro_rules! topic_newtype_impls {
    ($ty:ident, $validate:path) => {
        impl $ty {
            /// Validates `s`.
            pub fn new(s: impl Into<ByteStr>) -> Result<Self, TopicError> {
                let s = s.into();
                $validate(&s)?;
                Ok($ty(s))
            }

            /// The topic as a string.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// Unwraps into the underlying [`ByteStr`].
            pub fn into_inner(self) -> ByteStr {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl FromStr for $ty {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                $validate(s)?;
                Ok($ty(ByteStr::from(s)))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                s.parse()
            }
        }

        impl TryFrom<String> for $ty {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                $ty::new(s)
            }
        }

        impl TryFrom<&String> for $ty {
            type Error = TopicError;
            fn try_from(s: &String) -> Result<Self, TopicError> {
                s.as_str().parse()
            }
        }

        impl TryFrom<&$ty> for $ty {
            type Error = TopicError;
            fn try_from(t: &$ty) -> Result<Self, TopicError> {
                Ok(t.clone())
            }
        }

        impl TryFrom<ByteStr> for $ty {
            type Error = TopicError;
            fn try_from(s: ByteStr) -> Result<Self, TopicError> {
                $ty::new(s)
            }
        }

        impl From<$ty> for ByteStr {
            fn from(t: $ty) -> ByteStr {
                t.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// A valid topic name: non-empty, at most 65,535 bytes, no U+0000, no `+` or `#`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteStr);

topic_newtype_impls!(TopicName, validate_name);

/// A valid topic filter: non-empty, at most 65,535 bytes, no U+0000, `#` only alone in the last
/// level, `+` only alone in its level; `$share/{ShareName}/{filter}` with a non-empty share name
/// without `+`, `#` or `/` and a non-empty valid filter.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteStr);

topic_newtype_impls!(TopicFilter, validate_filter);

impl TopicFilter {
    /// True for a `$share/{ShareName}/{filter}` shared subscription.
    pub fn is_shared(&self) -> bool {
        self.share_name().is_some()
    }

    /// The share name of a shared subscription.
    pub fn share_name(&self) -> Option<&str> {
        self.as_str()
            .strip_prefix(SHARE_PREFIX)
            .and_then(|r| r.split_once('/'))
            .map(|(share, _)| share)
    }

    /// The filter that topics are matched against: the part after `$share/{ShareName}/` for a
    /// shared subscription, the whole filter otherwise.
    pub fn topic_filter(&self) -> &str {
        inner_filter(self.as_str())
    }

    /// True when the filter (its inner filter, when shared) contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.topic_filter().contains(['+', '#'])
    }

    /// Does this filter match the topic name `topic`? See [`matches()`].
    pub fn matches(&self, topic: &str) -> bool {
        matches(self.as_str(), topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "/",
            "sport/tennis/player1",
            "$SYS/x",
            " ",
            "a//b",
            "ünï/cødé",
        ] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a\0b"), Err(TopicError::NullCharacter));
        let long = "x".repeat(65_536);
        assert_eq!(
            TopicName::new(long.as_str()),
            Err(TopicError::TooLong { len: 65_536 })
        );
        assert!(TopicName::new("x".repeat(65_535)).is_ok());
    }

    fn exact(b: &[u8]) -> (bool, bool) {
        (b.iter().any(|&c| c == b'+' || c == b'#'), b.contains(&0))
    }

    /// `maybe_special` must never miss, and may only over-report for 0x08.
    fn check_maybe(b: &[u8]) {
        let (w, n) = exact(b);
        assert_eq!(scan(b), (w, n), "{b:02x?}");
        let m = maybe_special(b);
        assert_eq!(swar::maybe_special(b), m, "{b:02x?}");
        if w || n {
            assert!(m, "missed in {b:02x?}");
        } else if !b.contains(&0x08) {
            assert!(!m, "false positive in {b:02x?}");
        }
    }

    #[test]
    fn scan_finds_every_position() {
        for len in 0..70 {
            let clean = vec![b'x'; len];
            check_maybe(&clean);
            for i in 0..len {
                for byte in [
                    b'+', b'#', 0, 0x08, 0x2A, 0x2C, 0x22, 0x24, 0xAB, 0xA3, 0x03, 0x0B,
                ] {
                    let mut v = clean.clone();
                    v[i] = byte;
                    check_maybe(&v);
                }
            }
        }
    }

    #[test]
    fn scan_agrees_with_a_byte_loop() {
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let alphabet = [
            0u8, 1, 0x03, 0x08, 0x0B, 0x22, 0x23, 0x24, 0x2A, 0x2B, 0x2C, 0x7F, 0x80, 0xA3, 0xAB,
            0xFF,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| {
                    let r = x.rotate_left(i as u32 * 5) ^ (i as u64).wrapping_mul(0x9E37);
                    // Mostly harmless letters, some special bytes.
                    if r % 5 == 0 {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else {
                        b'q'
                    }
                })
                .collect();
            check_maybe(&v);
        }
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "sport/#",
            "sport/tennis/#",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "/",
            "$SYS/#",
            "$share/group/a/b",
            "$share/g/#",
            "$share/g/+/x",
            "$share/g//",
            "$sharefoo/+",
            "$share",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok}");
        }
        let bad = [
            ("", TopicError::Empty),
            ("sport/tennis#", TopicError::MisplacedMultiLevelWildcard),
            (
                "sport/tennis/#/ranking",
                TopicError::MisplacedMultiLevelWildcard,
            ),
            ("#/a", TopicError::MisplacedMultiLevelWildcard),
            ("##", TopicError::MisplacedMultiLevelWildcard),
            ("sport+", TopicError::MisplacedSingleLevelWildcard),
            ("sport/+x/a", TopicError::MisplacedSingleLevelWildcard),
            ("a\0", TopicError::NullCharacter),
            ("$share/", TopicError::EmptyShareName),
            ("$share//a", TopicError::EmptyShareName),
            ("$share/g", TopicError::MissingSharedFilter),
            ("$share/g/", TopicError::MissingSharedFilter),
            ("$share/g+/a", TopicError::InvalidShareName),
            ("$share/#/a", TopicError::InvalidShareName),
            ("$share/g/a#", TopicError::MisplacedMultiLevelWildcard),
        ];
        for (s, e) in bad {
            assert_eq!(TopicFilter::new(s), Err(e), "{s:?}");
        }
    }

    #[test]
    fn shared_accessors() {
        let f = TopicFilter::new("$share/consumer1/sport/tennis/+").unwrap();
        assert!(f.is_shared());
        assert_eq!(f.share_name(), Some("consumer1"));
        assert_eq!(f.topic_filter(), "sport/tennis/+");
        assert!(f.has_wildcards());
        assert!(f.matches("sport/tennis/player1"));
        assert!(!f.matches("sport/tennis"));
        let plain = TopicFilter::new("a/b").unwrap();
        assert!(!plain.is_shared());
        assert_eq!(plain.share_name(), None);
        assert_eq!(plain.topic_filter(), "a/b");
        assert!(!plain.has_wildcards());
    }

    #[test]
    fn spec_multi_level_examples() {
        // 4.7.1.2: "sport/tennis/player1/#" matches these.
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        // "sport/#" also matches the singular "sport".
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
    }

    #[test]
    fn spec_single_level_examples() {
        // 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(!matches("+/tennis/#", "sport/golf"));
    }

    #[test]
    fn spec_dollar_topics() {
        // 4.7.2
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!matches("$share/g/#", "$SYS/x"));
    }

    #[test]
    fn exact_and_case_sensitive() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a//b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
    }

    #[test]
    fn shared_free_fn() {
        assert!(matches("$share/g/a/+", "a/b"));
        assert!(!matches("$share/g/a/+", "$share/g/a/b"));
        // Without a second '/', not a shared filter: matched literally.
        assert!(matches("$share/g", "$share/g"));
    }

    #[test]
    fn conversions() {
        let n: TopicName = "a/b".parse().unwrap();
        assert_eq!(n.to_string(), "a/b");
        assert_eq!(n, "a/b");
        assert_eq!(format!("{n:?}"), "\"a/b\"");
        let n2 = TopicName::try_from(String::from("a/b")).unwrap();
        assert_eq!(n, n2);
        assert_eq!(TopicName::try_from("a/#"), Err(TopicError::WildcardInName));
        let f = TopicFilter::try_from("a/#").unwrap();
        assert_eq!(f.len(), 3);
        let inner: ByteStr = f.clone().into_inner();
        assert_eq!(inner, "a/#");
        assert_eq!(ByteStr::from(f), "a/#");
        assert_eq!("x".parse::<TopicFilter>().unwrap().as_ref(), "x");
    }

    #[test]
    fn error_display() {
        assert_eq!(
            TopicError::WildcardInName.to_string(),
            "topic contains a wildcard"
        );
        assert_eq!(
            TopicError::TooLong { len: 70_000 }.to_string(),
            "topic is 70000 bytes, longer than 65535"
        );
    }
}
