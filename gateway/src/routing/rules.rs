//! Compiled routing rules: what a rule matches and how it rewrites the
//! Request-URI user.

use super::config::{LocalPosition, RoutingConfig, RuleConfig};

/// Whether `c` may appear unescaped in a SIP user part (RFC 3261 `user`).
pub(crate) fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%#".contains(c)
}

/// Parses `lo-hi` (both all digits, lo ≤ hi, at most 18 digits).
pub(crate) fn parse_range(s: &str) -> Result<DigitRange, String> {
    let bad = || format!("{s:?} is not a range like \"1000-1999\"");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi) = (lo.trim(), hi.trim());
    let digits = |t: &str| !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(lo) || !digits(hi) {
        return Err(bad());
    }
    let (lo_n, hi_n): (u64, u64) = (
        lo.parse().map_err(|_| bad())?,
        hi.parse().map_err(|_| bad())?,
    );
    if lo_n > hi_n || lo.len() > hi.len() {
        return Err(format!("{s:?}: the lower bound is above the upper bound"));
    }
    Ok(DigitRange {
        lo: lo_n,
        hi: hi_n,
        min_len: lo.len(),
        max_len: hi.len(),
    })
}

/// A numeric extension range; the user must be all digits, as long as one
/// of the bounds or in between (so `01500` is not in `1000-1999`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DigitRange {
    lo: u64,
    hi: u64,
    min_len: usize,
    max_len: usize,
}

impl DigitRange {
    fn matches(&self, user: &str) -> bool {
        if user.len() < self.min_len
            || user.len() > self.max_len
            || !user.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        user.parse::<u64>()
            .is_ok_and(|n| (self.lo..=self.hi).contains(&n))
    }
}

/// What a rule matches.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Range(DigitRange),
    Prefix(String),
    Regex(regex::Regex),
    E164,
    Any,
}

impl Matcher {
    fn matches(&self, user: &str) -> bool {
        match self {
            Matcher::Range(r) => r.matches(user),
            Matcher::Prefix(p) => user.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(user),
            Matcher::E164 => is_e164(user),
            Matcher::Any => true,
        }
    }
}

/// `+` or `00`, then 6 to 15 digits (visual separators `-.()` ignored).
fn is_e164(user: &str) -> bool {
    let rest = if let Some(r) = user.strip_prefix('+') {
        r
    } else if let Some(r) = user.strip_prefix("00") {
        r
    } else {
        return false;
    };
    let mut n = 0usize;
    for c in rest.chars() {
        if c.is_ascii_digit() {
            n += 1;
        } else if !"-.()".contains(c) {
            return false;
        }
    }
    (6..=15).contains(&n) && rest.starts_with(|c: char| c.is_ascii_digit() && c != '0')
}

/// Where a matching rule sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// To the destination set with this index.
    Set(usize),
    /// To the location service.
    Local,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub label: String,
    domain: Option<String>,
    matcher: Matcher,
    pub action: Action,
    strip: usize,
    add_prefix: String,
}

impl Rule {
    /// The rewritten user when the rule matches.
    pub fn apply(&self, user: &str, domain: &str) -> Option<String> {
        if let Some(d) = &self.domain
            && !d.eq_ignore_ascii_case(domain)
        {
            return None;
        }
        if !self.matcher.matches(user) {
            return None;
        }
        let kept: String = user.chars().skip(self.strip).collect();
        Some(format!("{}{}", self.add_prefix, kept))
    }
}

/// Compiles the rules of a validated configuration; `set_index` maps a set
/// name to its index. `local` position adds the implicit location rule.
pub(crate) fn compile(
    config: &RoutingConfig,
    set_index: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<Rule>, (usize, String)> {
    let mut out = Vec::with_capacity(config.rules.len() + 1);
    let local_rule = || Rule {
        label: "local".into(),
        domain: None,
        matcher: Matcher::Any,
        action: Action::Local,
        strip: 0,
        add_prefix: String::new(),
    };
    if config.local == LocalPosition::First {
        out.push(local_rule());
    }
    for (i, r) in config.rules.iter().enumerate() {
        out.push(compile_one(i, r, &set_index)?);
    }
    if config.local == LocalPosition::Last {
        out.push(local_rule());
    }
    Ok(out)
}

fn compile_one(
    i: usize,
    r: &RuleConfig,
    set_index: &impl Fn(&str) -> Option<usize>,
) -> Result<Rule, (usize, String)> {
    let matcher = if let Some(range) = &r.range {
        Matcher::Range(parse_range(range).map_err(|m| (i, m))?)
    } else if let Some(p) = &r.prefix {
        Matcher::Prefix(p.clone())
    } else if let Some(re) = &r.regex {
        Matcher::Regex(regex::Regex::new(re).map_err(|e| (i, e.to_string()))?)
    } else if r.e164 {
        Matcher::E164
    } else {
        Matcher::Any
    };
    let action = if r.local {
        Action::Local
    } else {
        let name = r.set.as_deref().unwrap_or("");
        Action::Set(set_index(name).ok_or_else(|| (i, format!("no set named {name:?}")))?)
    };
    let label = r.name.clone().unwrap_or_else(|| {
        let what = if let Some(x) = &r.range {
            format!("range {x}")
        } else if let Some(x) = &r.prefix {
            format!("prefix {x}")
        } else if let Some(x) = &r.regex {
            format!("regex {x}")
        } else if r.e164 {
            "e164".into()
        } else if r.local {
            "local".into()
        } else {
            "default".into()
        };
        format!("rules[{i}] {what}")
    });
    Ok(Rule {
        label,
        domain: r.domain.clone(),
        matcher,
        action,
        strip: r.strip,
        add_prefix: r.add_prefix.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = parse_range("1000-1999").unwrap();
        assert!(r.matches("1000") && r.matches("1999") && r.matches("1500"));
        assert!(!r.matches("999") && !r.matches("2000") && !r.matches("01500"));
        assert!(!r.matches("15a0") && !r.matches("") && !r.matches("+1500"));
        let wide = parse_range("100-2999").unwrap();
        assert!(wide.matches("150") && wide.matches("2500") && !wide.matches("3000"));
        assert!(parse_range("2000-1000").is_err());
        assert!(parse_range("abc").is_err());
        assert!(parse_range("1-99999999999999999999").is_err());
    }

    #[test]
    fn e164_patterns() {
        assert!(is_e164("+4930123456"));
        assert!(is_e164("004930123456"));
        assert!(is_e164("+1-212-555-0100"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("4930123456"));
        assert!(!is_e164("+49"));
        assert!(!is_e164("+49301234567890123"));
        assert!(!is_e164("+49abc123456"));
    }

    fn rule(strip: usize, add: &str) -> Rule {
        Rule {
            label: "t".into(),
            domain: None,
            matcher: Matcher::Any,
            action: Action::Local,
            strip,
            add_prefix: add.into(),
        }
    }

    #[test]
    fn rewrite_strip_and_prefix() {
        assert_eq!(rule(1, "00").apply("+4930", "d").as_deref(), Some("004930"));
        assert_eq!(rule(0, "").apply("1001", "d").as_deref(), Some("1001"));
        assert_eq!(rule(9, "x").apply("12", "d").as_deref(), Some("x"));
        assert_eq!(rule(1, "").apply("é1", "d").as_deref(), Some("1"));
    }
}
