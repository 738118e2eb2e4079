//! Kubernetes label selectors (`a=b,c!=d,e in (f,g),!h,i>3`) parsed and matched in the
//! controller: for a Kustomization's `spec.ignore` targets and for telling whether an object is
//! in this controller's `--watch-label-selector`. Parsing is linear in the text (which may come
//! from a tenant's spec) and never panics.

use std::collections::BTreeMap;

/// A parsed Kubernetes label selector (`a=b,c!=d,e in (f,g),!h,i>3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    NotEquals,
    Equals,
    OpenParen,
    CloseParen,
    Comma,
    Greater,
    Less,
}

impl LabelSelector {
    /// Parses the syntax of Kubernetes' `labels.Parse`; an empty text selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokenize(text);
        let mut at = 0;
        let mut requirements = Vec::new();
        while at < tokens.len() {
            requirements.push(requirement(&tokens, &mut at)?);
            match tokens.get(at) {
                None => {}
                Some(Token::Comma) if at + 1 < tokens.len() => at += 1,
                Some(Token::Comma) => return Err("a requirement is missing after ','".into()),
                Some(t) => return Err(format!("found '{}', expected ','", shown(t))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches(
            &labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        )
    }

    pub fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(r.key.as_str()).copied();
            match &r.op {
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::In(values) => value.is_some_and(|v| values.iter().any(|w| w == v)),
                Op::NotIn(values) => value.is_none_or(|v| values.iter().all(|w| w != v)),
                Op::Gt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

fn tokenize(text: &str) -> Vec<Token> {
    const SPECIAL: &[char] = &['!', '=', '(', ')', ',', '<', '>'];
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::OpenParen,
            ')' => Token::CloseParen,
            ',' => Token::Comma,
            '<' => Token::Less,
            '>' => Token::Greater,
            '!' | '=' => {
                let doubled = chars.next_if(|(_, n)| *n == '=').is_some();
                match (c, doubled) {
                    ('!', true) => Token::NotEquals,
                    ('!', false) => Token::Not,
                    _ => Token::Equals,
                }
            }
            _ => {
                let mut end = start + c.len_utf8();
                while let Some((i, n)) =
                    chars.next_if(|(_, n)| !n.is_whitespace() && !SPECIAL.contains(n))
                {
                    end = i + n.len_utf8();
                }
                Token::Word(text[start..end].to_string())
            }
        };
        tokens.push(token);
    }
    tokens
}

fn shown(t: &Token) -> String {
    match t {
        Token::Word(w) => w.clone(),
        Token::Not => "!".into(),
        Token::NotEquals => "!=".into(),
        Token::Equals => "=".into(),
        Token::OpenParen => "(".into(),
        Token::CloseParen => ")".into(),
        Token::Comma => ",".into(),
        Token::Greater => ">".into(),
        Token::Less => "<".into(),
    }
}

fn requirement(tokens: &[Token], at: &mut usize) -> Result<Requirement, String> {
    let negated = tokens.get(*at) == Some(&Token::Not);
    if negated {
        *at += 1;
    }
    let key = match tokens.get(*at) {
        Some(Token::Word(w)) if w != "in" && w != "notin" => valid_key(w)?,
        Some(t) => return Err(format!("found '{}', expected a key", shown(t))),
        None => return Err("expected a key".into()),
    };
    *at += 1;
    if negated {
        return Ok(Requirement {
            key,
            op: Op::DoesNotExist,
        });
    }
    let op = match tokens.get(*at) {
        None | Some(Token::Comma) => {
            return Ok(Requirement {
                key,
                op: Op::Exists,
            });
        }
        Some(t) => t.clone(),
    };
    *at += 1;
    let op = match op {
        Token::Equals => Op::In(vec![single_value(tokens, at)?]),
        Token::NotEquals => Op::NotIn(vec![single_value(tokens, at)?]),
        Token::Greater => Op::Gt(integer(tokens, at)?),
        Token::Less => Op::Lt(integer(tokens, at)?),
        Token::Word(w) if w == "in" => Op::In(value_set(tokens, at)?),
        Token::Word(w) if w == "notin" => Op::NotIn(value_set(tokens, at)?),
        t => return Err(format!("found '{}', expected an operator", shown(&t))),
    };
    Ok(Requirement { key, op })
}

/// `a=` selects the empty value, as in Kubernetes.
fn single_value(tokens: &[Token], at: &mut usize) -> Result<String, String> {
    match tokens.get(*at) {
        Some(Token::Word(w)) => {
            *at += 1;
            valid_value(w)
        }
        None | Some(Token::Comma) => Ok(String::new()),
        Some(t) => Err(format!("found '{}', expected a value", shown(t))),
    }
}

fn integer(tokens: &[Token], at: &mut usize) -> Result<i64, String> {
    let text = single_value(tokens, at)?;
    text.parse()
        .map_err(|_| format!("'{text}' is not an integer"))
}

fn value_set(tokens: &[Token], at: &mut usize) -> Result<Vec<String>, String> {
    if tokens.get(*at) != Some(&Token::OpenParen) {
        return Err("expected '(' after 'in' or 'notin'".into());
    }
    *at += 1;
    let mut values = Vec::new();
    loop {
        match tokens.get(*at) {
            Some(Token::Word(w)) => {
                values.push(valid_value(w)?);
                *at += 1;
            }
            // `(a,)` and `(,a)` hold an empty value, as in Kubernetes.
            Some(Token::Comma | Token::CloseParen) => values.push(String::new()),
            Some(t) => return Err(format!("found '{}', expected a value", shown(t))),
            None => return Err("expected ')'".into()),
        }
        match tokens.get(*at) {
            Some(Token::Comma) => *at += 1,
            Some(Token::CloseParen) => {
                *at += 1;
                break;
            }
            Some(t) => return Err(format!("found '{}', expected ',' or ')'", shown(t))),
            None => return Err("expected ')'".into()),
        }
    }
    if values.len() == 1 && values[0].is_empty() && tokens.get(*at - 2) == Some(&Token::OpenParen) {
        return Err("the set of values for 'in' or 'notin' can't be empty".into());
    }
    Ok(values)
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then 1–63 characters.
fn valid_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if !prefix_ok || name.is_empty() || !is_label_text(name) {
        return Err(format!("invalid key '{key}'"));
    }
    Ok(key.to_string())
}

fn valid_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_text(value) {
        Ok(value.to_string())
    } else {
        Err(format!("invalid value '{value}'"))
    }
}

/// At most 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
fn is_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn label_selectors_match_as_kubernetes_matches_them() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("replicas", "5")]);
        for (text, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web , tier=front", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("missing in (web)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("replicas>4", true),
            ("replicas<5", false),
            ("app>1", false),
            ("tier=", false),
            ("example.com/team in (a,)", false),
        ] {
            let s = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.matches(&l), want, "{text}");
        }
        let empty = labels(&[("tier", "")]);
        assert!(LabelSelector::parse("tier=").unwrap().matches(&empty));
    }

    #[test]
    fn malformed_label_selectors_are_refused_with_the_cause() {
        for (text, cause) in [
            ("app=", ""),
            ("=web", "expected a key"),
            ("app in web", "expected '('"),
            ("app in ()", "can't be empty"),
            ("app in (a", "expected ')'"),
            ("app web", "expected an operator"),
            ("app=web tier=x", "expected ','"),
            ("app=web,", "missing after ','"),
            ("replicas>x", "not an integer"),
            ("-bad=x", "invalid key"),
            ("app=we b", "expected ','"),
            ("app=-x", "invalid value"),
            ("UPPER.example/x=1", "invalid key"),
        ] {
            let got = LabelSelector::parse(text);
            if cause.is_empty() {
                assert!(got.is_ok(), "{text}: {got:?}");
            } else {
                let e = got.expect_err(text);
                assert!(e.contains(cause), "{text}: {e}");
            }
        }
    }
}
