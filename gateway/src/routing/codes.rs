//! Sets of SIP status codes written as numbers or classes (`503`, `"5xx"`).

use super::config::CodeSpec;

/// A set of final status codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet {
    exact: Vec<u16>,
    classes: Vec<u16>,
}

impl CodeSet {
    /// Parses the configured specs; the error gives the index and reason.
    pub fn parse(specs: &[CodeSpec]) -> Result<Self, (usize, String)> {
        let mut set = CodeSet::default();
        for (i, spec) in specs.iter().enumerate() {
            let bad = || {
                (
                    i,
                    "expected a status code 100-699 or a class like \"5xx\"".to_owned(),
                )
            };
            match spec {
                CodeSpec::Number(n) if (100..=699).contains(n) => set.exact.push(*n),
                CodeSpec::Number(_) => return Err(bad()),
                CodeSpec::Text(t) => {
                    let t = t.trim();
                    let lower = t.to_ascii_lowercase();
                    if let Some(d) = lower.strip_suffix("xx") {
                        match d.parse::<u16>() {
                            Ok(c) if (1..=6).contains(&c) && d.len() == 1 => set.classes.push(c),
                            _ => return Err(bad()),
                        }
                    } else {
                        match t.parse::<u16>() {
                            Ok(n) if (100..=699).contains(&n) => set.exact.push(n),
                            _ => return Err(bad()),
                        }
                    }
                }
            }
        }
        Ok(set)
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.exact.contains(&code) || self.classes.contains(&(code / 100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_classes() {
        let s = CodeSet::parse(&[CodeSpec::Number(408), CodeSpec::Text("5xx".into())]).unwrap();
        assert!(s.contains(408) && s.contains(503) && s.contains(500));
        assert!(!s.contains(404) && !s.contains(486) && !s.contains(600));
        assert_eq!(
            CodeSet::parse(&[CodeSpec::Text("9xx".into())])
                .unwrap_err()
                .0,
            0
        );
        assert!(CodeSet::parse(&[CodeSpec::Number(408), CodeSpec::Number(99)]).is_err());
        assert!(
            CodeSet::parse(&[CodeSpec::Text("404".into())])
                .unwrap()
                .contains(404)
        );
    }
}
