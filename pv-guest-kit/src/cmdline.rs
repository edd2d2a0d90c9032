//! The guest command line: space-separated `key=value` tokens (SPEC.md §5,
//! `StartInfo.cmdline`, everything after `--` in the boot module's string).
//!
//! A token without `=` is a key with an empty value. When a key repeats, the
//! last occurrence wins, as on Linux.
#![forbid(unsafe_code)]

/// A parsed view of a command line; borrows it.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    line: &'a str,
}

impl<'a> Args<'a> {
    /// A view of `line` (e.g. `StartInfo::cmdline_str()`).
    pub const fn new(line: &'a str) -> Self {
        Self { line }
    }

    /// Every `(key, value)` pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.line
            .split_ascii_whitespace()
            .map(|token| token.split_once('=').unwrap_or((token, "")))
    }

    /// The value of `key`, if the command line names it.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter()
            .filter(|&(k, _)| k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// The value of `key` as a number (see [`parse_u64`]); `None` when the key
    /// is missing *or* its value is not a number — use [`Args::get`] to tell
    /// the two apart.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_u64)
    }
}

/// Parses a decimal number, or a hexadecimal one with a `0x` prefix;
/// `_` separators are allowed between digits.
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    digits
        .bytes()
        .filter(|&b| b != b'_')
        .try_fold(0u64, |acc, b| {
            let digit = char::from(b).to_digit(radix)?;
            acc.checked_mul(u64::from(radix))?
                .checked_add(u64::from(digit))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs() {
        let args = Args::new("greeting=hello-1  lines=5\tflag");
        assert_eq!(args.get("greeting"), Some("hello-1"));
        assert_eq!(args.get("lines"), Some("5"));
        assert_eq!(args.get("flag"), Some(""));
        assert_eq!(args.get("missing"), None);
        assert_eq!(args.get("line"), None);
        assert_eq!(args.get_u64("lines"), Some(5));
        assert_eq!(args.get_u64("greeting"), None);
        assert_eq!(args.iter().count(), 3);
    }

    #[test]
    fn values_may_contain_equals_and_last_wins() {
        let args = Args::new("a=b=c a=1 a=2");
        assert_eq!(args.get("a"), Some("2"));
        assert_eq!(Args::new("a=b=c").get("a"), Some("b=c"));
    }

    #[test]
    fn empty_line() {
        let args = Args::new("   ");
        assert_eq!(args.iter().count(), 0);
        assert_eq!(args.get(""), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("40"), Some(40));
        assert_eq!(parse_u64("0x1f"), Some(31));
        assert_eq!(parse_u64("0XFF"), Some(255));
        assert_eq!(parse_u64("1_000"), Some(1000));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        for bad in ["", "0x", "-1", "+1", "1.5", "12Q", "_1", "1_", "0x_1", " 1"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
