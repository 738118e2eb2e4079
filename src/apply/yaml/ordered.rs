//! YAML as a tree that keeps its mappings in document order, with go-yaml v3's scalar types:
//! what SOPS reads. Its MAC hashes a file's values in document order, and a decrypted file is
//! written back in the order it was encrypted in.
//!
//! SOPS writes plain YAML: no anchors, aliases or merge keys, which are refused here rather
//! than read one way by this reader and another by go-yaml.

use std::collections::HashSet;

use serde::ser::{SerializeMap, SerializeSeq};
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle};

use super::resolve::{self, TagKind, Typed};
use super::{Dialect, MAX_DEPTH, MAX_DOCUMENTS, YamlError};

/// A value as go-yaml v3 types it into an `interface{}`, in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A timestamp, as Go's `time.Time` writes itself (RFC 3339 with nanoseconds).
    Time(String),
    Seq(Vec<Ordered>),
    Map(Vec<(String, Ordered)>),
}

impl Ordered {
    /// A mapping's value under `key`.
    pub fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Ordered::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => serializer.serialize_unit(),
            Ordered::Bool(b) => serializer.serialize_bool(*b),
            Ordered::Int(i) => serializer.serialize_i64(*i),
            Ordered::Float(f) => serializer.serialize_f64(*f),
            Ordered::Str(s) | Ordered::Time(s) => serializer.serialize_str(s),
            Ordered::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Ordered::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Every document of `text` (an empty one is `Null`).
pub fn ordered_documents(text: &str) -> Result<Vec<Ordered>, YamlError> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    let mut parser = Parser::new_from_str_with_options(text, options);
    let mut builder = Builder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| YamlError::Invalid(e.to_string()))?;
        let line = span.start.line();
        let rejected = |message: String| YamlError::Rejected { line, message };
        match event {
            Event::DocumentStart(..) => builder.start_document()?,
            Event::DocumentEnd => builder.end_document(),
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    return Err(rejected("anchors are not read in SOPS files".into()));
                }
                let empty = span.start.index() == span.end.index();
                let text = match empty && style == ScalarStyle::Plain {
                    true => "",
                    false => &value,
                };
                builder
                    .scalar(text, style, TagKind::of(tag.as_deref()))
                    .map_err(rejected)?;
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _)
                if anchor != 0 =>
            {
                return Err(rejected("anchors are not read in SOPS files".into()));
            }
            Event::SequenceStart(..) => builder.open(Open::Seq(Vec::new()))?,
            Event::MappingStart(..) => builder.open(Open::Map(Vec::new(), HashSet::new(), None))?,
            Event::SequenceEnd | Event::MappingEnd => builder.close().map_err(rejected)?,
            Event::Alias(_) => return Err(rejected("aliases are not read in SOPS files".into())),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(builder.docs)
}

enum Open {
    Seq(Vec<Ordered>),
    /// The entries so far, their keys, and the key waiting for its value.
    Map(Vec<(String, Ordered)>, HashSet<String>, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Ordered>,
    docs: Vec<Ordered>,
}

impl Builder {
    fn start_document(&mut self) -> Result<(), YamlError> {
        if self.docs.len() >= MAX_DOCUMENTS {
            return Err(YamlError::OverBudget(format!(
                "more than {MAX_DOCUMENTS} documents in one file"
            )));
        }
        self.stack.clear();
        self.root = None;
        Ok(())
    }

    fn end_document(&mut self) {
        self.docs.push(self.root.take().unwrap_or(Ordered::Null));
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: TagKind) -> Result<(), String> {
        if let Some(Open::Map(_, _, pending @ None)) = self.stack.last_mut() {
            if text == "<<" && style == ScalarStyle::Plain {
                return Err("merge keys are not read in SOPS files".into());
            }
            let key = match resolve::typed(Dialect::Kustomize, text, style, tag)? {
                Typed::Str(s) => s,
                // SOPS refuses non-string keys ("Only string keys are supported").
                _ => return Err(format!("the key {text:?} is not a string")),
            };
            *pending = Some(key);
            return Ok(());
        }
        let value = match resolve::typed(Dialect::Kustomize, text, style, tag)? {
            Typed::Null => Ordered::Null,
            Typed::Bool(b) => Ordered::Bool(b),
            Typed::Int(i) => Ordered::Int(i),
            Typed::Uint(_) => return Err(format!("the integer {text} is too large for SOPS")),
            Typed::Float(f) => Ordered::Float(f),
            Typed::Str(s) => Ordered::Str(s),
            Typed::Timestamp(t) => Ordered::Time(t.to_json()?),
        };
        self.place(value)
    }

    fn open(&mut self, open: Open) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::OverBudget(format!(
                "nested more than {MAX_DEPTH} levels"
            )));
        }
        self.stack.push(open);
        Ok(())
    }

    fn close(&mut self) -> Result<(), String> {
        let value = match self.stack.pop() {
            Some(Open::Seq(items)) => Ordered::Seq(items),
            Some(Open::Map(entries, _, None)) => Ordered::Map(entries),
            Some(Open::Map(_, _, Some(key))) => {
                return Err(format!("the key {key:?} has no value"));
            }
            None => return Err("a collection ends that never started".into()),
        };
        self.place(value)
    }

    fn place(&mut self, value: Ordered) -> Result<(), String> {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Open::Seq(items)) => items.push(value),
            Some(Open::Map(entries, keys, pending)) => {
                let key = pending.take().ok_or("a mapping key that is not a scalar")?;
                if !keys.insert(key.clone()) {
                    return Err(format!("mapping key {key:?} already defined"));
                }
                entries.push((key, value));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_go_yaml_v3_types_are_kept() {
        let docs = ordered_documents(
            "b: 1\na: [yes, 1.50, true, null, '2', 2001-12-14]\n---\nz: {y: x}\n",
        )
        .unwrap();
        assert_eq!(
            docs,
            vec![
                Ordered::Map(vec![
                    ("b".into(), Ordered::Int(1)),
                    (
                        "a".into(),
                        Ordered::Seq(vec![
                            Ordered::Str("yes".into()),
                            Ordered::Float(1.5),
                            Ordered::Bool(true),
                            Ordered::Null,
                            Ordered::Str("2".into()),
                            Ordered::Time("2001-12-14T00:00:00Z".into()),
                        ])
                    ),
                ]),
                Ordered::Map(vec![(
                    "z".into(),
                    Ordered::Map(vec![("y".into(), Ordered::Str("x".into()))])
                )]),
            ]
        );
    }

    #[test]
    fn what_sops_never_writes_is_refused() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: {<<: {b: 1}}\n",
            "1: x\n",
            "a: 1\na: 2\n",
            "a: 18446744073709551615\n",
        ] {
            assert!(ordered_documents(text).is_err(), "{text}");
        }
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(ordered_documents(&deep).is_err());
    }
}
