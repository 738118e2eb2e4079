//! JSON values built from granit-parser's events with go-yaml's structure rules (anchors,
//! merge keys, duplicate and non-string keys), charging everything to the budget of one parse.

// kustomize also rewrites every object's `metadata.annotations` (it adds build annotations and
// removes them again through a `map[string]string`): each value becomes its text as written
// (`0755` stays "0755", a list becomes ""), and an empty or non-mapping `annotations` goes.
// The loader does the same for the document's own `metadata` in that dialect (`Role`).
//
// Aliases are not copied while the text is read: an anchored collection is shared (`Rc`) by
// its definition and every alias, and copied only when the document becomes a `Value`. What
// an alias will cost is charged when it is read (the anchored node's own count of nodes and
// string bytes, aliases inside it included), so the copies can never outgrow the budget.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle};

use super::resolve::{self, Key, TagKind};
use super::strconv::json_number;
use super::{Dialect, MAX_ALIASES, MAX_DEPTH, MAX_DOCUMENTS, Used, YamlError};

/// How numbers leave the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Numbers {
    /// As go-yaml typed them: `1e3` stays the float 1000.0 (sigs.k8s.io/yaml's coercion into
    /// string fields needs to know).
    GoTyped,
    /// As the dialect's reader finally hands them to the API server (see `json_numbers`).
    Json,
}

/// How many documents to read: sigs.k8s.io/yaml stops after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Documents {
    All,
    First,
}

/// The most one parse may build: nodes, and bytes of scalar text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) nodes: usize,
    pub(super) scalar_bytes: usize,
}

/// Every document of `text`; `used` receives the counts even when the parse fails.
pub(super) fn load(
    text: &str,
    dialect: Dialect,
    numbers: Numbers,
    documents: Documents,
    limits: Limits,
    used: &mut Used,
) -> Result<Vec<Value>, YamlError> {
    let mut loader = Loader {
        dialect,
        numbers,
        limits,
        used: Counts::default(),
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        docs: Vec::new(),
    };
    let result = loader.run(text, documents);
    *used = Used {
        nodes: loader.used.nodes,
        scalar_bytes: loader.used.scalar_bytes,
    };
    result.map(|()| loader.docs)
}

fn parser_options() -> Options {
    let mut options = Options::default();
    // Comments are no data; without them every event is a node or a boundary.
    options.set_emit_comments(false);
    options
}

/// A value under construction. Leaves hold scalars as Go typed them.
#[derive(Debug, Clone)]
enum Node {
    Leaf(Value),
    Seq(Vec<Node>),
    Map(BTreeMap<String, Node>),
    /// An anchored collection, shared with its aliases until the document is converted.
    Shared(Rc<Node>),
}

impl Node {
    /// The entries of a mapping, seen through a shared one.
    fn entries(&self) -> Option<&BTreeMap<String, Node>> {
        match self {
            Node::Map(entries) => Some(entries),
            Node::Shared(node) => node.entries(),
            _ => None,
        }
    }
}

/// An anchor's definition, kept for its aliases.
enum Anchor {
    /// A scalar is kept as written: an alias may use it as a key or as a value.
    Scalar {
        text: String,
        style: ScalarStyle,
        tag: TagKind,
    },
    Collection {
        node: Rc<Node>,
        /// What the collection holds, aliases inside it expanded.
        size: Counts,
        /// Levels of nesting inside it, itself included.
        height: usize,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    nodes: usize,
    scalar_bytes: usize,
    aliases: usize,
    documents: usize,
}

/// Where a collection sits, as far as kustomize's rewrite of annotations is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The document's own node.
    Root,
    /// The value of the document's `metadata`.
    Metadata,
    /// The value of its `annotations`, or a mapping merged into it.
    Annotations,
    Other,
}

/// An open sequence or mapping.
struct Frame {
    role: Role,
    anchor: usize,
    /// The counts before the collection itself, to size an anchored one when it closes.
    start: Counts,
    /// Levels of nesting inside it so far, itself included.
    height: usize,
    body: Body,
}

enum Body {
    Seq(Vec<Node>),
    Map(MapBody),
}

struct MapBody {
    entries: BTreeMap<String, Node>,
    /// go-yaml v3's duplicate check: each key as written, with its line.
    seen: HashMap<String, usize>,
    pending: Option<Pending>,
    /// The mappings merged once the mapping is complete, under its own keys, earlier ones
    /// first: kustomize's one merge key, or a post-build `"<<"` key (see `Pending::LateMerge`).
    merges: Vec<Node>,
    merged: bool,
}

/// What the next node of a mapping is the value of.
enum Pending {
    Key(String),
    Drop,
    Merge,
    /// sigs.k8s.io/yaml: a key that is the string `<<` without being a merge key (`"<<"`).
    /// Flux writes the substituted object back with go-yaml v3, whose encoder leaves `<<`
    /// unquoted, so the next read merges it after all (the last such key, own keys first).
    LateMerge,
}

struct Loader {
    dialect: Dialect,
    numbers: Numbers,
    limits: Limits,
    used: Counts,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// The current document's anchors by granit-parser's id (unique across documents).
    anchors: HashMap<usize, Anchor>,
    docs: Vec<Value>,
}

impl Loader {
    fn run(&mut self, text: &str, documents: Documents) -> Result<(), YamlError> {
        let mut parser = Parser::new_from_str_with_options(text, parser_options());
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| YamlError::Invalid(e.to_string()))?;
            let line = span.start.line();
            match event {
                Event::DocumentStart(..) => self.start_document()?,
                Event::DocumentEnd => {
                    self.end_document();
                    if documents == Documents::First {
                        break;
                    }
                }
                Event::Scalar(value, style, anchor, tag) => {
                    let tag = TagKind::of(tag.as_deref());
                    // The parser reports an empty node as a plain `~`; what was written (an
                    // annotation keeps it) is nothing.
                    let empty = span.start.index() == span.end.index();
                    let text = if empty && style == ScalarStyle::Plain {
                        ""
                    } else {
                        &value
                    };
                    self.scalar(text, style, tag, anchor, line)?;
                }
                Event::SequenceStart(_, anchor, _) => self.open(Body::Seq(Vec::new()), anchor)?,
                Event::MappingStart(_, anchor, _) => {
                    self.open(Body::Map(MapBody::new()), anchor)?
                }
                Event::SequenceEnd | Event::MappingEnd => self.close(line)?,
                Event::Alias(id) => self.alias(id, line)?,
                Event::StreamEnd => break,
                _ => {}
            }
        }
        Ok(())
    }

    fn start_document(&mut self) -> Result<(), YamlError> {
        self.used.documents += 1;
        if self.used.documents > MAX_DOCUMENTS {
            return Err(over_budget(format!(
                "more than {MAX_DOCUMENTS} documents in one file"
            )));
        }
        self.stack.clear();
        self.root = None;
        self.anchors.clear();
        Ok(())
    }

    fn end_document(&mut self) {
        // Dropping the anchors first lets the conversion move, not copy, what only the
        // document itself still holds.
        self.anchors.clear();
        let root = self.root.take().unwrap_or(Node::Leaf(Value::Null));
        self.docs.push(into_value(root, self.numbers, self.dialect));
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: TagKind,
        anchor: usize,
        line: usize,
    ) -> Result<(), YamlError> {
        self.count(1, text.len())?;
        if anchor != 0 {
            let anchored = Anchor::Scalar {
                text: text.to_owned(),
                style,
                tag,
            };
            self.anchors.insert(anchor, anchored);
        }
        self.place_scalar(text, style, tag, line)
    }

    /// A scalar (read or aliased) as the key or the value the open collection expects next.
    fn place_scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: TagKind,
        line: usize,
    ) -> Result<(), YamlError> {
        let rejected = |message| YamlError::Rejected { line, message };
        if let Some(role) = self.expecting_key() {
            let key = resolve::key(self.dialect, text, style, tag, role == Role::Root)
                .map_err(rejected)?;
            if role == Role::Annotations && !resolve::plain_is_string(self.dialect, text) {
                // kustomize writes the rewritten keys back unquoted, so go-yaml reads this one
                // as a number, boolean, null or timestamp and the object cannot become JSON.
                return Err(rejected(format!(
                    "annotation key {text:?} is not a string once kustomize has rewritten it \
                     (json: unsupported type: map[interface {{}}]interface {{}})"
                )));
            }
            return self.set_key(key, text, line);
        }
        let value = match self.next_is_annotation() {
            true => Value::String(text.to_owned()),
            false => resolve::typed(self.dialect, text, style, tag)
                .and_then(resolve::value)
                .map_err(rejected)?,
        };
        self.place(Node::Leaf(value), 0, line)
    }

    fn open(&mut self, body: Body, anchor: usize) -> Result<(), YamlError> {
        if self.expecting_key().is_some() {
            // go-yaml v3 cannot make a string of it, v2 calls it an invalid map key.
            return Err(YamlError::Invalid(
                "a mapping or sequence as a mapping key".to_string(),
            ));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(over_budget(format!(
                "mappings and sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let start = self.used;
        self.count(1, 0)?;
        let role = self.child_role();
        self.stack.push(Frame {
            role,
            anchor,
            start,
            height: 1,
            body,
        });
        Ok(())
    }

    fn close(&mut self, line: usize) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Err(YamlError::Invalid(
                "a collection ends that never started".to_string(),
            ));
        };
        let node = match frame.body {
            Body::Seq(items) => Node::Seq(items),
            Body::Map(map) => Node::Map(map.finish()),
        };
        let node = match frame.anchor {
            0 => node,
            anchor => {
                let node = Rc::new(node);
                let size = Counts {
                    nodes: self.used.nodes.saturating_sub(frame.start.nodes),
                    scalar_bytes: self
                        .used
                        .scalar_bytes
                        .saturating_sub(frame.start.scalar_bytes),
                    ..Counts::default()
                };
                self.anchors.insert(
                    anchor,
                    Anchor::Collection {
                        node: node.clone(),
                        size,
                        height: frame.height,
                    },
                );
                Node::Shared(node)
            }
        };
        self.place(node, frame.height, line)
    }

    fn alias(&mut self, id: usize, line: usize) -> Result<(), YamlError> {
        self.used.aliases += 1;
        if self.used.aliases > MAX_ALIASES {
            return Err(over_budget(format!(
                "more than {MAX_ALIASES} aliases in one file"
            )));
        }
        // A collection's anchor is stored when it ends, so an alias inside it finds nothing.
        let anchor = self.anchors.get(&id).ok_or_else(|| YamlError::Rejected {
            line,
            message: "an alias refers to a collection that contains it".to_string(),
        })?;
        match anchor {
            Anchor::Scalar { text, style, tag } => {
                let (text, style, tag) = (text.clone(), *style, *tag);
                self.count(1, text.len())?;
                self.place_scalar(&text, style, tag, line)
            }
            Anchor::Collection { node, size, height } => {
                let (node, size, height) = (node.clone(), *size, *height);
                if self.expecting_key().is_some() {
                    return Err(YamlError::Invalid(
                        "a mapping or sequence as a mapping key".to_string(),
                    ));
                }
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(over_budget(format!(
                        "an alias nests mappings and sequences deeper than {MAX_DEPTH} levels"
                    )));
                }
                self.count(size.nodes, size.scalar_bytes)?;
                self.place(Node::Shared(node), height, line)
            }
        }
    }

    /// Whether the open collection is a mapping waiting for a key, and if so its role.
    fn expecting_key(&self) -> Option<Role> {
        match self.stack.last() {
            Some(Frame {
                role,
                body: Body::Map(map),
                ..
            }) if map.pending.is_none() => Some(*role),
            _ => None,
        }
    }

    /// Whether the next node is the value of an annotation, which kustomize keeps as written.
    fn next_is_annotation(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                role: Role::Annotations,
                body: Body::Map(MapBody {
                    pending: Some(Pending::Key(_)),
                    ..
                }),
                ..
            })
        )
    }

    /// The role of a collection opened now.
    fn child_role(&self) -> Role {
        let Some(parent) = self.stack.last() else {
            return Role::Root;
        };
        if self.dialect != Dialect::Kustomize {
            return Role::Other;
        }
        match (&parent.body, parent.role) {
            (Body::Map(map), Role::Root) if map.pending_key() == Some("metadata") => Role::Metadata,
            (Body::Map(map), Role::Metadata) if map.pending_key() == Some("annotations") => {
                Role::Annotations
            }
            // What is merged into the annotations is rewritten with them.
            (Body::Map(map), Role::Annotations) if matches!(map.pending, Some(Pending::Merge)) => {
                Role::Annotations
            }
            (Body::Seq(_), Role::Annotations) => Role::Annotations,
            _ => Role::Other,
        }
    }

    fn set_key(&mut self, key: Key, written: &str, line: usize) -> Result<(), YamlError> {
        let dialect = self.dialect;
        let Some(Frame {
            body: Body::Map(map),
            ..
        }) = self.stack.last_mut()
        else {
            return Err(YamlError::Invalid(
                "a mapping key outside a mapping".to_string(),
            ));
        };
        map.pending = Some(match key {
            Key::Text(text) if dialect == Dialect::SigsYaml && text == "<<" => Pending::LateMerge,
            Key::Text(text) => {
                // go-yaml v3 refuses a key written twice (as written: `a` and "a" are one
                // key, 1 and 01 are two); sigs.k8s.io/yaml keeps the last value.
                if dialect == Dialect::Kustomize {
                    if let Some(first) = map.seen.get(written) {
                        return Err(YamlError::Rejected {
                            line,
                            message: format!(
                                "mapping key {written:?} already defined at line {first}"
                            ),
                        });
                    }
                    map.seen.insert(written.to_owned(), line);
                }
                Pending::Key(text)
            }
            Key::Merge if dialect == Dialect::Kustomize && map.merged => {
                return Err(YamlError::Rejected {
                    line,
                    message: "duplicate merge key".to_string(),
                });
            }
            Key::Merge => {
                map.merged = true;
                Pending::Merge
            }
            Key::Drop => Pending::Drop,
        });
        Ok(())
    }

    /// A finished node into the open collection (or as the document's root).
    fn place(&mut self, node: Node, height: usize, line: usize) -> Result<(), YamlError> {
        let dialect = self.dialect;
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.height = parent.height.max(height + 1);
        let role = parent.role;
        match &mut parent.body {
            Body::Seq(items) => items.push(node),
            Body::Map(map) => match map.pending.take() {
                Some(Pending::Key(key)) => {
                    let node = match (role, key.as_str()) {
                        // kustomize reads an annotation that is no scalar as "".
                        (Role::Annotations, _) if !matches!(node, Node::Leaf(_)) => {
                            Node::Leaf(Value::String(String::new()))
                        }
                        (Role::Metadata, "annotations") => match annotations(node, line)? {
                            Some(node) => node,
                            None => return Ok(()),
                        },
                        _ => node,
                    };
                    map.entries.insert(key, node);
                }
                Some(Pending::Drop) => {}
                Some(Pending::Merge) => map.merge(dialect, node, line)?,
                Some(Pending::LateMerge) => map.merges = merge_sources(node, line)?,
                None => {
                    return Err(YamlError::Invalid(
                        "a mapping or sequence as a mapping key".to_string(),
                    ));
                }
            },
        }
        Ok(())
    }

    /// Adds to the counts, refusing what the limits do not allow.
    fn count(&mut self, nodes: usize, scalar_bytes: usize) -> Result<(), YamlError> {
        self.used.nodes = self.used.nodes.saturating_add(nodes);
        self.used.scalar_bytes = self.used.scalar_bytes.saturating_add(scalar_bytes);
        if self.used.nodes > self.limits.nodes {
            return Err(over_budget(format!(
                "the YAML expands to more than {} nodes",
                self.limits.nodes
            )));
        }
        if self.used.scalar_bytes > self.limits.scalar_bytes {
            return Err(over_budget(format!(
                "the YAML expands to more than {} bytes of strings",
                self.limits.scalar_bytes
            )));
        }
        Ok(())
    }
}

impl MapBody {
    fn new() -> MapBody {
        MapBody {
            entries: BTreeMap::new(),
            seen: HashMap::new(),
            pending: None,
            merges: Vec::new(),
            merged: false,
        }
    }

    /// The key whose value comes next.
    fn pending_key(&self) -> Option<&str> {
        match &self.pending {
            Some(Pending::Key(key)) => Some(key),
            _ => None,
        }
    }

    fn merge(&mut self, dialect: Dialect, value: Node, line: usize) -> Result<(), YamlError> {
        let sources = merge_sources(value, line)?;
        match dialect {
            // kyaml inlines merge keys before go-yaml reads the mapping: its own keys win,
            // then the earlier mappings (applied when the mapping is complete). An aliased
            // mapping arrives here with its own merge keys resolved; kyaml copies such a key
            // along and go-yaml merges it last, which differs only when what it merges
            // collides with a later mapping of the list.
            Dialect::Kustomize => self.merges = sources,
            // go-yaml v2 merges where the key stands: it overwrites the keys before it and
            // is overwritten by those after; in a list the earlier mappings win.
            Dialect::SigsYaml => {
                for source in sources.into_iter().rev() {
                    for (key, node) in owned_entries(source) {
                        self.entries.insert(key, node);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> BTreeMap<String, Node> {
        for source in std::mem::take(&mut self.merges) {
            for (key, node) in owned_entries(source) {
                self.entries.entry(key).or_insert(node);
            }
        }
        self.entries
    }
}

/// What kustomize leaves of `metadata.annotations`: nothing unless it is a mapping with
/// entries (kyaml panics on a sequence there).
fn annotations(node: Node, line: usize) -> Result<Option<Node>, YamlError> {
    let sequence = match &node {
        Node::Shared(shared) => matches!(**shared, Node::Seq(_)),
        node => matches!(node, Node::Seq(_)),
    };
    if sequence {
        return Err(YamlError::Rejected {
            line,
            message: "metadata.annotations is a sequence, which kustomize cannot read".to_string(),
        });
    }
    Ok(node
        .entries()
        .is_some_and(|entries| !entries.is_empty())
        .then_some(node))
}

/// The value of a merge key as the mappings it names: a mapping, or a sequence of mappings
/// (inline or aliased).
fn merge_sources(value: Node, line: usize) -> Result<Vec<Node>, YamlError> {
    let sources = match value {
        Node::Seq(items) => items,
        source => vec![source],
    };
    match sources.iter().all(|source| source.entries().is_some()) {
        true => Ok(sources),
        false => Err(YamlError::Rejected {
            line,
            message: "map merge requires map or sequence of maps as the value".to_string(),
        }),
    }
}

/// A merge source's entries, moved out of an inline mapping or copied from a shared one (the
/// alias that shares it paid for the copy).
fn owned_entries(source: Node) -> Vec<(String, Node)> {
    match source {
        Node::Map(entries) => entries.into_iter().collect(),
        Node::Shared(node) => match Rc::try_unwrap(node) {
            Ok(node) => owned_entries(node),
            Err(node) => node
                .entries()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|(key, node)| (key.clone(), node.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        },
        Node::Leaf(_) | Node::Seq(_) => Vec::new(),
    }
}

fn over_budget(message: String) -> YamlError {
    YamlError::OverBudget(message)
}

/// The finished document as JSON; shared nodes are copied here, where they are used.
fn into_value(node: Node, numbers: Numbers, dialect: Dialect) -> Value {
    match node {
        Node::Leaf(value) => match numbers {
            Numbers::GoTyped => value,
            Numbers::Json => json_numbers(value, dialect),
        },
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .map(|item| into_value(item, numbers, dialect))
                .collect(),
        ),
        Node::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, node)| (key, into_value(node, numbers, dialect)))
                .collect(),
        ),
        Node::Shared(node) => match Rc::try_unwrap(node) {
            Ok(node) => into_value(node, numbers, dialect),
            Err(node) => into_value((*node).clone(), numbers, dialect),
        },
    }
}

/// The numbers of `value` as the dialect's reader finally writes them with Go's
/// `encoding/json`. kustomize writes go-yaml v3's values, so only floats change (an integral
/// one below 1e21 comes back an integer: `1e3` and `1.0` are 1000 and 1). Post-build
/// substitution reads its JSON back into an `interface{}`, where every number is a float64,
/// so there integers go through a float64 too (beyond 2^53 they round, as in Flux).
pub(super) fn json_numbers(value: Value, dialect: Dialect) -> Value {
    match value {
        Value::Number(n) if n.is_f64() || dialect == Dialect::SigsYaml => n
            .as_f64()
            .and_then(json_number)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| json_numbers(item, dialect))
                .collect(),
        ),
        Value::Object(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, item)| (key, json_numbers(item, dialect)))
                .collect(),
        ),
        other => other,
    }
}
