//! The benchmark line format and its parser: benchmarks print
//! `BENCH name=<id> value=<number> unit=<unit>` on their console, possibly behind
//! the `(dN) ` (or `(hv) `) prefix hv-core adds; `cargo xtask bench` collects them.
//!
//! Extra `key=value` fields after the three required ones are allowed and ignored.

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// Identifier, e.g. `hypercall_null_cycles` (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// The figure (finite).
    pub value: f64,
    /// Its unit, e.g. `cycles`.
    pub unit: String,
}

/// Parses one serial line; `None` if it is not a well-formed `BENCH` line.
pub fn parse_line(line: &str) -> Option<BenchResult> {
    let line = line.trim();
    let rest = strip_source_prefix(line).strip_prefix("BENCH ")?;
    let (mut name, mut value, mut unit) = (None, None, None);
    for field in rest.split_whitespace() {
        let (key, val) = field.split_once('=')?;
        match key {
            "name" => name = Some(val),
            "value" => value = Some(val),
            "unit" => unit = Some(val),
            _ => {}
        }
    }
    let name = name.filter(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    })?;
    let value = value?.parse::<f64>().ok().filter(|v| v.is_finite())?;
    let unit = unit.filter(|u| !u.is_empty())?;
    Some(BenchResult {
        name: name.to_owned(),
        value,
        unit: unit.to_owned(),
    })
}

/// Every `BENCH` line of a serial log, in order.
pub fn collect(log: &str) -> Vec<BenchResult> {
    log.lines().filter_map(parse_line).collect()
}

/// `line` without a leading `(dN) ` or `(hv) ` source tag.
fn strip_source_prefix(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('(') else {
        return line;
    };
    let Some((tag, after)) = rest.split_once(") ") else {
        return line;
    };
    let is_domain = tag
        .strip_prefix('d')
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()));
    if is_domain || tag == "hv" {
        after
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, value: f64, unit: &str) -> BenchResult {
        BenchResult {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        }
    }

    #[test]
    fn parses_plain_and_prefixed_lines() {
        assert_eq!(
            parse_line("BENCH name=hypercall_null_cycles value=812 unit=cycles"),
            Some(result("hypercall_null_cycles", 812.0, "cycles"))
        );
        assert_eq!(
            parse_line("(d1) BENCH name=evtchn_rtt value=1.5e3 unit=ns iters=1000\r"),
            Some(result("evtchn_rtt", 1500.0, "ns"))
        );
        assert_eq!(
            parse_line("(hv) BENCH unit=cycles value=-3 name=x.y-z"),
            Some(result("x.y-z", -3.0, "cycles"))
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for line in [
            "",
            "(d1) Hello",
            "BENCHMARK name=a value=1 unit=u",
            "BENCH name=a value=1",
            "BENCH value=1 unit=u",
            "BENCH name=a value=fast unit=u",
            "BENCH name=a value=inf unit=u",
            "BENCH name=a value=NaN unit=u",
            "BENCH name=a b value=1 unit=u",
            "BENCH name= value=1 unit=u",
            "BENCH name=a/b value=1 unit=u",
            "(dx) BENCH name=a value=1 unit=u",
            "(d1) note: BENCH name=a value=1 unit=u",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn collects_in_order() {
        let log = "(hv) boot\n(d1) BENCH name=a value=1 unit=u\nnoise\n(d1) BENCH name=b value=2 unit=v\n";
        assert_eq!(collect(log), [result("a", 1.0, "u"), result("b", 2.0, "v")]);
    }
}
