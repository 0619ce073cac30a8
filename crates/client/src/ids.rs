//! Client-generated ids: a random per-client prefix and a counter, unique across
//! processes without coordination and cheap to make on the hot path.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A random 64-bit number from the standard library's per-process random hash keys.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Makes ids `<16 hex digits>-<counter>`.
pub struct IdGen {
    prefix: String,
    counter: AtomicU64,
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        Self {
            prefix: format!("{:016x}", random_u64()),
            counter: AtomicU64::new(1),
        }
    }

    /// The prefix shared by this generator's ids.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Written by hand: `format!` costs more than the rest of recording a span's start.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut id = String::with_capacity(self.prefix.len() + 1 + digits.len() - at);
        id.push_str(&self.prefix);
        id.push('-');
        // ASCII digits only.
        id.extend(digits[at..].iter().map(|&d| char::from(d)));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_a_dash_and_the_counter_in_decimal() {
        let ids = IdGen::new();
        assert_eq!(ids.prefix().len(), 16);
        let first: Vec<String> = (0..12).map(|_| ids.next()).collect();
        let expected: Vec<String> = (1..=12).map(|n| format!("{}-{n}", ids.prefix())).collect();
        assert_eq!(first, expected);
        ids.counter.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.next(), format!("{}-{}", ids.prefix(), u64::MAX));
    }
}
