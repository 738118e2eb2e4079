//! CEL in Kustomizations, with Flux's semantics (fluxcd/pkg `runtime/cel`) on the `cel` crate
//! (cel-rust): `spec.healthCheckExprs` decide a custom kind's health, `dependsOn[].readyExpr`
//! decides a dependency's readiness.
//!
//! Expressions are tenant input evaluated inside the controller, so what the crate leaves open
//! is bounded here: the expression's length and nesting, the nesting of comprehensions, and the
//! iterations an evaluation may take given the object it reads (cel-go interrupts a long
//! evaluation; cel-rust cannot be interrupted, so an evaluation that could run long is refused
//! before it starts).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::{Context, Env, Program};
use serde_json::Value;

use super::health::Health;
use crate::api::kustomization::CustomHealthCheck;

/// Longer expressions are refused: Flux's are a line or two, and the parser and the
/// interpreter recurse over the expression.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// How deep an expression's syntax tree may go (the parser's own limit is on its grammar
/// rules, not on the tree it builds from long operator chains).
const MAX_TREE_DEPTH: usize = 64;
/// How many comprehensions (`all`, `exists`, `map`, …) may run one inside another.
const MAX_NESTED_COMPREHENSIONS: u32 = 3;
/// The most loop iterations an evaluation may take, estimated from the longest list (or
/// string, for `split`) the variables hold and the comprehension nesting.
const MAX_ITERATIONS: u128 = 1_000_000;
/// Functions whose result can outgrow their input without bound (chained `replace` doubles
/// a string's length per call): not offered to tenant expressions.
const UNBOUNDED_FUNCTIONS: &[&str] = &["replace"];

/// Flux's environment: the standard library, optional types, and the strings and encoders
/// extensions (cel-go's `ext.Sets` has no cel-rust counterpart).
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // Both are declared once on a fresh stdlib; a failure would be a crate bug, and the
    // expressions that need them then fail to evaluate with "no such overload".
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::encoders);
    Arc::new(env)
});

/// A parsed expression, with what bounds its evaluation.
pub struct Expression {
    source: String,
    program: Program,
    nested_comprehensions: u32,
    splits_strings: bool,
    /// `+` calls: each may lengthen a range by another operand's length.
    additions: u32,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl Expression {
    /// Parses `source` (Flux's messages: "failed to parse the CEL expression '…': …").
    pub fn parse(source: &str) -> Result<Self, String> {
        let failed = |why: String| format!("failed to parse the CEL expression '{source}': {why}");
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "failed to parse the CEL expression of {} bytes: longer than {MAX_EXPRESSION_BYTES}",
                source.len()
            ));
        }
        let (program, shape) = parse_on_own_stack(source).map_err(failed)?;
        if let Some(f) = UNBOUNDED_FUNCTIONS
            .iter()
            .find(|f| program.references().has_function(f))
        {
            return Err(failed(format!(
                "'{f}' is not available: its results can grow without bound"
            )));
        }
        if shape.nested_comprehensions > MAX_NESTED_COMPREHENSIONS {
            return Err(failed(format!(
                "comprehensions nest {} deep, more than {MAX_NESTED_COMPREHENSIONS}",
                shape.nested_comprehensions
            )));
        }
        Ok(Expression {
            source: source.to_string(),
            nested_comprehensions: shape.nested_comprehensions + u32::from(shape.grows_in_loops),
            additions: shape.additions,
            splits_strings: program.references().has_function("split"),
            program,
        })
    }

    /// Parses `source` as cel-go compiles a typed expression: only `variables` may be referred
    /// to, and the result must be a boolean.
    pub fn compile_boolean(source: &str, variables: &[&str]) -> Result<Self, String> {
        let expression = Self::parse(source)?;
        let root = expression.program.expression();
        let mut scope: Vec<&str> = variables.to_vec();
        if let Some(name) = undeclared(root, &mut scope) {
            return Err(format!(
                "failed to parse the CEL expression '{source}': undeclared reference to '{name}'"
            ));
        }
        if !yields_bool(root) {
            return Err(format!(
                "CEL expression output type mismatch: expected bool, got another type in '{source}'"
            ));
        }
        Ok(expression)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with `variables` bound; anything but a boolean is an error.
    ///
    /// An evaluation may take up to `MAX_ITERATIONS` steps: from async code, call it through
    /// `evaluate_apart`.
    pub fn evaluate_boolean(&self, variables: &[(&str, &Value)]) -> Result<bool, String> {
        self.check_cost(variables)?;
        let mut context = Context::with_env(Arc::clone(&ENV));
        for (name, value) in variables {
            context
                .add_variable(*name, *value)
                .map_err(|e| format!("failed to bind '{name}': {e}"))?;
        }
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(_) => Err(format!(
                "failed to evaluate CEL expression as boolean: '{}'",
                self.source
            )),
            Err(e) => Err(format!(
                "failed to evaluate the CEL expression '{}': {}",
                self.source,
                without_values(&e)
            )),
        }
    }

    fn check_cost(&self, variables: &[(&str, &Value)]) -> Result<(), String> {
        if self.nested_comprehensions == 0 {
            return Ok(());
        }
        // A range may also be built by the expression: from its own literals (bounded by its
        // length) and concatenations, each of which can add another operand's length.
        let widest = variables
            .iter()
            .map(|(_, v)| widest(v, self.splits_strings))
            .max()
            .unwrap_or(0)
            .max(self.source.len()) as u128;
        let range = widest.saturating_mul(u128::from(self.additions) + 1);
        let iterations = (range + 1).saturating_pow(self.nested_comprehensions);
        if iterations > MAX_ITERATIONS {
            return Err(format!(
                "the CEL expression '{}' would iterate up to {iterations} times over this object, more than {MAX_ITERATIONS}",
                self.source
            ));
        }
        Ok(())
    }
}

/// An evaluation error without the values it was evaluating: cel-rust puts whole operands in
/// many messages, and the object may be a Secret. Names (keys, variables, functions, types)
/// come from the expression and stay.
fn without_values(error: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match error {
        E::NoSuchKey(key) => format!("no such key: {key}"),
        E::UndeclaredReference(name) => format!("undeclared reference to '{name}'"),
        E::NoSuchOverload(o) => format!(
            "no such overload: {}({})",
            o.function(),
            o.argument_types().join(", ")
        ),
        E::UnexpectedType { got, want } => format!("unexpected type: got '{got}', want '{want}'"),
        E::InvalidArgumentCount { expected, actual } => {
            format!("invalid argument count: expected {expected}, got {actual}")
        }
        E::NotSupportedAsMethod { method, .. } => {
            format!("method '{method}' not supported on this value")
        }
        E::UnsupportedBinaryOperator(op, ..) | E::Overflow(op, ..) => {
            format!("operator '{op}' cannot be applied to these values")
        }
        E::FunctionError { function, .. } => format!("function '{function}' failed"),
        E::DivisionByZero(_) | E::RemainderByZero(_) => "division by zero".into(),
        E::ValuesNotComparable(..) => "values that cannot be compared".into(),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        _ => "the expression cannot be evaluated on this object".into(),
    }
}

/// Evaluates `expression` on a blocking thread, so a long evaluation holds no async worker.
pub async fn evaluate_apart(
    expression: Arc<Expression>,
    variables: Vec<(&'static str, Value)>,
) -> Result<bool, String> {
    let evaluation = tokio::task::spawn_blocking(move || {
        let bound: Vec<(&str, &Value)> = variables.iter().map(|(k, v)| (*k, v)).collect();
        expression.evaluate_boolean(&bound)
    });
    match tokio::time::timeout(EVALUATION_DEADLINE, evaluation).await {
        Ok(done) => done.map_err(|e| format!("the CEL evaluation failed: {e}"))?,
        Err(_) => Err(too_slow()),
    }
}

/// How long a reconcile waits for one evaluation; one that runs longer is abandoned (its
/// thread cannot be stopped, but no worker waits on it).
const EVALUATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

fn too_slow() -> String {
    format!(
        "the CEL evaluation took longer than {}s and was abandoned",
        EVALUATION_DEADLINE.as_secs()
    )
}

/// The longest list or map in `value` (and string, when the expression can split strings
/// into lists): what one comprehension may iterate over.
fn widest(value: &Value, count_strings: bool) -> usize {
    let mut widest = 0;
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::Array(items) => {
                widest = widest.max(items.len());
                pending.extend(items);
            }
            Value::Object(fields) => {
                widest = widest.max(fields.len());
                pending.extend(fields.values());
            }
            Value::String(s) if count_strings => widest = widest.max(s.len()),
            _ => {}
        }
    }
    widest
}

/// The parser and the trees it builds recurse once per operator of a chain such as
/// `1+1+…`, more than a worker thread's stack holds at the longest expression allowed; so
/// parsing, measuring and (for a refused tree) dropping happen on a thread with a stack sized
/// for it. What comes back is at most `MAX_TREE_DEPTH` deep, safe on any thread.
fn parse_on_own_stack(source: &str) -> Result<(Program, Shape), String> {
    const PARSER_STACK: usize = 256 << 20;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || {
                let program = ENV.compile(source).map_err(|e| e.to_string())?;
                let shape = Shape::of(program.expression())?;
                Ok((program, shape))
            })
            .map_err(|e| format!("no thread to parse it on: {e}"))?
            .join()
            .map_err(|_| "the parser failed".to_string())?
    })
}

/// What bounds an expression's evaluation, measured over its syntax tree.
struct Shape {
    nested_comprehensions: u32,
    /// A comprehension body builds values (`+`, list or map literals): what it builds per
    /// iteration may be as large as the input, so it counts as one more level.
    grows_in_loops: bool,
    additions: u32,
}

impl Shape {
    fn of(root: &IdedExpr) -> Result<Shape, String> {
        let nested = comprehension_nesting(root, 0)?;
        Ok(Shape {
            nested_comprehensions: nested,
            grows_in_loops: builds_in_loop(root, false),
            additions: count_additions(root),
        })
    }
}

/// Whether a comprehension body concatenates or builds collections. A `map`/`filter`
/// macro's own `accu + [x]` step adds one element per iteration and does not count. (Depth
/// was bounded by `comprehension_nesting`.)
fn builds_in_loop(expr: &IdedExpr, in_loop: bool) -> bool {
    builds(expr, in_loop, None)
}

fn builds(expr: &IdedExpr, in_loop: bool, accu: Option<&str>) -> bool {
    let any = |es: &mut dyn Iterator<Item = &IdedExpr>| {
        for e in es {
            if builds(e, in_loop, accu) {
                return true;
            }
        }
        false
    };
    match &expr.expr {
        Expr::Comprehension(c) => {
            builds(&c.iter_range, in_loop, accu)
                || builds(&c.loop_cond, true, Some(&c.accu_var))
                || builds(&c.loop_step, true, Some(&c.accu_var))
                || builds(&c.result, in_loop, accu)
        }
        Expr::Call(call) if call.func_name == operators::ADD && accumulates(&call.args, accu) => {
            match &call.args[1].expr {
                Expr::List(list) => any(&mut list.elements.iter()),
                _ => builds(&call.args[1], in_loop, accu),
            }
        }
        Expr::Call(call) => {
            (in_loop && call.func_name == operators::ADD)
                || any(&mut call.target.as_deref().into_iter().chain(&call.args))
        }
        Expr::List(list) => {
            (in_loop && !list.elements.is_empty()) || any(&mut list.elements.iter())
        }
        Expr::Map(map) => {
            (in_loop && !map.entries.is_empty())
                || any(&mut map.entries.iter().flat_map(|e| entry_parts(&e.expr)))
        }
        Expr::Select(select) => builds(&select.operand, in_loop, accu),
        _ => false,
    }
}

/// The `+` calls of an expression, a macro's own accumulation excepted. (Depth was bounded.)
fn count_additions(expr: &IdedExpr) -> u32 {
    fn count(expr: &IdedExpr, accu: Option<&str>) -> u32 {
        let sum = |es: &mut dyn Iterator<Item = &IdedExpr>, accu| {
            let mut total = 0u32;
            for e in es {
                total = total.saturating_add(count(e, accu));
            }
            total
        };
        match &expr.expr {
            Expr::Comprehension(c) => {
                let accu = Some(c.accu_var.as_str());
                count(&c.iter_range, None)
                    .saturating_add(count(&c.loop_cond, accu))
                    .saturating_add(count(&c.loop_step, accu))
                    .saturating_add(count(&c.result, None))
            }
            Expr::Call(call) => {
                let own = call.func_name == operators::ADD && !accumulates(&call.args, accu);
                u32::from(own).saturating_add(sum(
                    &mut call.target.as_deref().into_iter().chain(&call.args),
                    accu,
                ))
            }
            Expr::List(list) => sum(&mut list.elements.iter(), accu),
            Expr::Map(map) => sum(
                &mut map.entries.iter().flat_map(|e| entry_parts(&e.expr)),
                accu,
            ),
            Expr::Select(select) => count(&select.operand, accu),
            _ => 0,
        }
    }
    count(expr, None)
}

/// `accu + …`: a macro appending to its own accumulator.
fn accumulates(args: &[IdedExpr], accu: Option<&str>) -> bool {
    matches!((args, accu), ([first, _], Some(accu)) if matches!(&first.expr, Expr::Ident(n) if n == accu))
}

/// The deepest comprehension nesting under `expr`: a comprehension's body runs once per
/// element of its range, so only its body nests; its range runs once.
fn comprehension_nesting(expr: &IdedExpr, depth: usize) -> Result<u32, String> {
    if depth > MAX_TREE_DEPTH {
        return Err(format!(
            "the expression nests more than {MAX_TREE_DEPTH} deep"
        ));
    }
    let deeper = |e: &IdedExpr| comprehension_nesting(e, depth + 1);
    let deepest = |es: &mut dyn Iterator<Item = &IdedExpr>| -> Result<u32, String> {
        let mut most = 0;
        for e in es {
            most = most.max(deeper(e)?);
        }
        Ok(most)
    };
    Ok(match &expr.expr {
        Expr::Comprehension(c) => {
            let body = deepest(&mut [&c.accu_init, &c.loop_cond, &c.loop_step].into_iter())?;
            deeper(&c.iter_range)?.max(body + 1).max(deeper(&c.result)?)
        }
        Expr::Call(call) => deepest(&mut call.target.as_deref().into_iter().chain(&call.args))?,
        Expr::List(list) => deepest(&mut list.elements.iter())?,
        Expr::Map(map) => deepest(&mut map.entries.iter().flat_map(|e| entry_parts(&e.expr)))?,
        Expr::Struct(s) => deepest(&mut s.entries.iter().flat_map(|e| entry_parts(&e.expr)))?,
        Expr::Select(select) => deeper(&select.operand)?,
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 0,
    })
}

fn entry_parts(entry: &EntryExpr) -> Vec<&IdedExpr> {
    match entry {
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        EntryExpr::StructField(f) => vec![&f.value],
    }
}

/// The first identifier that is neither declared nor bound by an enclosing comprehension.
/// (The tree's depth was bounded by `Shape::of`.)
fn undeclared<'a>(expr: &'a IdedExpr, scope: &mut Vec<&'a str>) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => (!scope.contains(&name.as_str())).then(|| name.clone()),
        Expr::Comprehension(c) => {
            if let Some(name) = undeclared(&c.iter_range, scope) {
                return Some(name);
            }
            if let Some(name) = undeclared(&c.accu_init, scope) {
                return Some(name);
            }
            let before = scope.len();
            scope.push(&c.iter_var);
            scope.extend(c.iter_var2.as_deref());
            scope.push(&c.accu_var);
            let found = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .find_map(|e| undeclared(e, scope));
            scope.truncate(before);
            found
        }
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .find_map(|e| undeclared(e, scope)),
        Expr::List(list) => list.elements.iter().find_map(|e| undeclared(e, scope)),
        Expr::Map(map) => map
            .entries
            .iter()
            .flat_map(|e| entry_parts(&e.expr))
            .find_map(|e| undeclared(e, scope)),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|e| entry_parts(&e.expr))
            .find_map(|e| undeclared(e, scope)),
        Expr::Select(select) => undeclared(&select.operand, scope),
        Expr::Literal(_) | Expr::Unspecified => None,
    }
}

/// Whether the expression's type is `bool` as cel-go's checker would find it with every
/// variable a `google.protobuf.Struct`: fields read from the variables are `dyn`, so only an
/// operation that yields a boolean does.
fn yields_bool(expr: &IdedExpr) -> bool {
    const BOOLEAN_CALLS: &[&str] = &[
        operators::LOGICAL_AND,
        operators::LOGICAL_OR,
        operators::LOGICAL_NOT,
        operators::EQUALS,
        operators::NOT_EQUALS,
        operators::GREATER,
        operators::GREATER_EQUALS,
        operators::LESS,
        operators::LESS_EQUALS,
        operators::IN,
        operators::NOT_STRICTLY_FALSE,
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "hasValue",
        "bool",
    ];
    match &expr.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => true,
        Expr::Select(select) => select.test,
        Expr::Call(call) if call.func_name == operators::CONDITIONAL => {
            call.args.len() == 3 && yields_bool(&call.args[1]) && yields_bool(&call.args[2])
        }
        Expr::Call(call) => BOOLEAN_CALLS.contains(&call.func_name.as_str()),
        Expr::Comprehension(c) => match &c.result.expr {
            Expr::Ident(name) if *name == c.accu_var => {
                matches!(c.accu_init.expr, Expr::Literal(LiteralValue::Boolean(_)))
            }
            _ => yields_bool(&c.result),
        },
        _ => false,
    }
}

/// One entry of `spec.healthCheckExprs`, parsed.
#[derive(Debug)]
struct StatusEvaluator {
    current: Expression,
    failed: Option<Expression>,
    in_progress: Option<Expression>,
}

/// A kind's health by a custom rule: its status, and why it is `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub error: Option<String>,
}

/// `spec.healthCheckExprs`, parsed once per pass and keyed by (group, kind); a group-wide
/// entry has an empty kind, and a kind's own entry wins over it.
#[derive(Debug, Default)]
pub struct HealthExpressions {
    by_kind: BTreeMap<(String, String), Arc<StatusEvaluator>>,
}

impl HealthExpressions {
    /// Flux's messages: "failed to create custom status evaluator for healthchecks[i]: …",
    /// "duplicate custom health check for GroupKind … at healthchecks[i]".
    pub fn compile(checks: &[CustomHealthCheck]) -> Result<Self, String> {
        let mut by_kind = BTreeMap::new();
        for (i, check) in checks.iter().enumerate() {
            let group = group_of(&check.api_version).to_string();
            let kind = check.kind.clone().unwrap_or_default();
            let key = (group, kind);
            if by_kind.contains_key(&key) {
                return Err(format!(
                    "duplicate custom health check for GroupKind {} at healthchecks[{i}]",
                    group_kind(&key.0, &key.1)
                ));
            }
            let evaluator = StatusEvaluator::parse(check).map_err(|e| {
                format!("failed to create custom status evaluator for healthchecks[{i}]: {e}")
            })?;
            by_kind.insert(key, Arc::new(evaluator));
        }
        Ok(HealthExpressions { by_kind })
    }

    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    /// The rule for an object of `group`/`kind`, if one applies.
    pub fn rule_for(&self, group: &str, kind: &str) -> Option<HealthRule> {
        self.by_kind
            .get(&(group.to_string(), kind.to_string()))
            .or_else(|| self.by_kind.get(&(group.to_string(), String::new())))
            .map(|e| HealthRule(Arc::clone(e)))
    }
}

/// The rule that decides one kind's health; cheap to clone into a blocking task.
#[derive(Debug, Clone)]
pub struct HealthRule(Arc<StatusEvaluator>);

impl HealthRule {
    /// `evaluate` on a blocking thread (see `Expression::evaluate_boolean`).
    pub async fn evaluate_apart(&self, object: Value) -> Verdict {
        let rule = self.clone();
        let evaluation = tokio::task::spawn_blocking(move || rule.evaluate(&object));
        let unknown = |error| Verdict {
            health: Health::Unknown,
            error: Some(error),
        };
        match tokio::time::timeout(EVALUATION_DEADLINE, evaluation).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => unknown(format!("the CEL evaluation failed: {e}")),
            Err(_) => unknown(too_slow()),
        }
    }

    /// Flux's order (RFC 0009): a stale `observedGeneration` is InProgress; then `inProgress`,
    /// `failed` and `current` in turn, the first that holds decides; none → InProgress. An
    /// expression that cannot be evaluated (a field the object lacks) makes it Unknown.
    pub fn evaluate(&self, object: &Value) -> Verdict {
        let verdict = |health, error| Verdict { health, error };
        let generation = object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64);
        let observed = object
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64);
        if let (Some(g), Some(seen)) = (generation, observed)
            && g != seen
        {
            return verdict(Health::InProgress, None);
        }
        let Some(fields) = object.as_object() else {
            return verdict(Health::Unknown, Some("the object is not a map".into()));
        };
        let variables: Vec<(&str, &Value)> = fields.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let rule = &self.0;
        let ordered = [
            (rule.in_progress.as_ref(), Health::InProgress),
            (rule.failed.as_ref(), Health::Failed),
            (Some(&rule.current), Health::Current),
        ];
        for (expression, health) in ordered {
            let Some(expression) = expression else {
                continue;
            };
            match expression.evaluate_boolean(&variables) {
                Ok(true) => return verdict(health, None),
                Ok(false) => {}
                Err(e) => return verdict(Health::Unknown, Some(e)),
            }
        }
        verdict(Health::InProgress, None)
    }
}

impl StatusEvaluator {
    fn parse(check: &CustomHealthCheck) -> Result<Self, String> {
        if check.current.is_empty() {
            return Err("expression Current not specified".into());
        }
        let optional =
            |name: &str, source: &Option<String>| -> Result<Option<Expression>, String> {
                match source.as_deref().filter(|s| !s.is_empty()) {
                    Some(s) => Expression::parse(s)
                        .map(Some)
                        .map_err(|e| format!("failed to parse the expression {name}: {e}")),
                    None => Ok(None),
                }
            };
        Ok(StatusEvaluator {
            current: Expression::parse(&check.current)
                .map_err(|e| format!("failed to parse the expression Current: {e}"))?,
            failed: optional("Failed", &check.failed)?,
            in_progress: optional("InProgress", &check.in_progress)?,
        })
    }
}

/// The group of an `apiVersion` (`""` for the core group's `v1`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Kubernetes' `GroupKind.String()`: `Kind.group`, or `Kind` for the core group.
fn group_kind(group: &str, kind: &str) -> String {
    match group.is_empty() {
        true => kind.to_string(),
        false => format!("{kind}.{group}"),
    }
}

/// The variables of a `readyExpr`.
pub const READY_EXPR_VARIABLES: &[&str] = &["self", "dep"];

/// Every `dependsOn[].readyExpr`, compiled (terminal errors name the dependency, as Flux's
/// "failed to evaluate dependency <name>: …").
pub fn compile_ready_exprs<'a>(
    dependencies: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, Arc<Expression>>, String> {
    let mut compiled = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (name, source) in dependencies {
        if !seen.insert(source) {
            continue;
        }
        let expression = Expression::compile_boolean(source, READY_EXPR_VARIABLES)
            .map_err(|e| format!("failed to evaluate dependency {name}: {e}"))?;
        compiled.insert(source.to_string(), Arc::new(expression));
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(api_version: &str, kind: Option<&str>, current: &str) -> CustomHealthCheck {
        CustomHealthCheck {
            api_version: api_version.into(),
            kind: kind.map(Into::into),
            current: current.into(),
            in_progress: None,
            failed: None,
        }
    }

    fn certificate(ready: &str) -> Value {
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "c", "generation": 2},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": ready}]}
        })
    }

    const READY: &str = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')";
    const NOT_READY: &str =
        "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')";

    #[test]
    fn flux_order_decides_health() {
        let mut c = check("cert-manager.io/v1", Some("Certificate"), READY);
        c.failed = Some(NOT_READY.into());
        let rules = HealthExpressions::compile(&[c]).unwrap();
        let rule = rules.rule_for("cert-manager.io", "Certificate").unwrap();
        assert_eq!(rule.evaluate(&certificate("True")).health, Health::Current);
        assert_eq!(rule.evaluate(&certificate("False")).health, Health::Failed);
        assert_eq!(
            rule.evaluate(&certificate("Unknown")).health,
            Health::InProgress
        );
        let mut stale = certificate("True");
        stale["metadata"]["generation"] = json!(3);
        assert_eq!(rule.evaluate(&stale).health, Health::InProgress);
    }

    #[test]
    fn in_progress_is_asked_first() {
        let mut c = check("example.com/v1", None, "true");
        c.in_progress = Some("has(status.phase) && status.phase == 'Pending'".into());
        let rules = HealthExpressions::compile(&[c]).unwrap();
        let rule = rules.rule_for("example.com", "Anything").unwrap();
        let pending = json!({"kind": "Anything", "status": {"phase": "Pending"}});
        assert_eq!(rule.evaluate(&pending).health, Health::InProgress);
        let done = json!({"kind": "Anything", "status": {"phase": "Done"}});
        assert_eq!(rule.evaluate(&done).health, Health::Current);
    }

    #[test]
    fn a_kind_rule_beats_the_group_rule_and_groups_ignore_versions() {
        let rules = HealthExpressions::compile(&[
            check("example.com/v1", None, "false"),
            check("example.com/v2", Some("Special"), "true"),
        ])
        .unwrap();
        let object = json!({"kind": "Special"});
        let special = rules.rule_for("example.com", "Special").unwrap();
        assert_eq!(special.evaluate(&object).health, Health::Current);
        let other = rules.rule_for("example.com", "Other").unwrap();
        assert_eq!(other.evaluate(&object).health, Health::InProgress);
        assert!(rules.rule_for("other.com", "Special").is_none());
    }

    #[test]
    fn a_missing_field_is_unknown_with_the_cause() {
        let rules = HealthExpressions::compile(&[check("example.com/v1", None, READY)]).unwrap();
        let rule = rules.rule_for("example.com", "X").unwrap();
        let verdict = rule.evaluate(&json!({"kind": "X", "metadata": {}}));
        assert_eq!(verdict.health, Health::Unknown);
        assert!(verdict.error.unwrap().contains("status"));
    }

    #[test]
    fn a_non_boolean_result_is_an_error() {
        let rules =
            HealthExpressions::compile(&[check("example.com/v1", None, "status.phase")]).unwrap();
        let rule = rules.rule_for("example.com", "X").unwrap();
        let verdict = rule.evaluate(&json!({"status": {"phase": "Done"}}));
        assert_eq!(verdict.health, Health::Unknown);
        assert!(verdict.error.unwrap().contains("as boolean"), "boolean");
    }

    #[test]
    fn configuration_errors_name_the_entry() {
        let err =
            HealthExpressions::compile(&[check("example.com/v1", None, "status.(")]).unwrap_err();
        assert!(err.starts_with(
            "failed to create custom status evaluator for healthchecks[0]: failed to parse the expression Current: failed to parse the CEL expression 'status.('"
        ), "{err}");
        let err = HealthExpressions::compile(&[
            check("example.com/v1", Some("A"), "true"),
            check("example.com/v2", Some("A"), "true"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            "duplicate custom health check for GroupKind A.example.com at healthchecks[1]"
        );
        let err = HealthExpressions::compile(&[check("example.com/v1", None, "")]).unwrap_err();
        assert!(err.ends_with("expression Current not specified"), "{err}");
    }

    #[test]
    fn ready_exprs_are_typed_like_cel_go() {
        let ok = "self.metadata.name != '' && dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')";
        assert!(Expression::compile_boolean(ok, READY_EXPR_VARIABLES).is_ok());
        let err = Expression::compile_boolean("other.x == 1", READY_EXPR_VARIABLES).unwrap_err();
        assert!(err.contains("undeclared reference to 'other'"), "{err}");
        let err =
            Expression::compile_boolean("dep.spec.suspend", READY_EXPR_VARIABLES).unwrap_err();
        assert!(err.contains("expected bool"), "{err}");
        let err = Expression::compile_boolean(
            "dep.status.conditions.map(c, c.type)",
            READY_EXPR_VARIABLES,
        )
        .unwrap_err();
        assert!(err.contains("expected bool"), "{err}");
        // A comprehension variable is in scope in its body only.
        let err = Expression::compile_boolean(
            "dep.status.conditions.all(c, c.status == 'True') && c.type == 'x'",
            READY_EXPR_VARIABLES,
        )
        .unwrap_err();
        assert!(err.contains("undeclared reference to 'c'"), "{err}");
        let ternary = "has(dep.status) ? dep.status.observedGeneration == 1 : false";
        assert!(Expression::compile_boolean(ternary, READY_EXPR_VARIABLES).is_ok());
    }

    #[test]
    fn ready_exprs_see_self_and_dep() {
        let expr = Expression::compile_boolean(
            "dep.metadata.labels.tier == self.metadata.labels.tier",
            READY_EXPR_VARIABLES,
        )
        .unwrap();
        let me = json!({"metadata": {"labels": {"tier": "web"}}});
        let web = json!({"metadata": {"labels": {"tier": "web"}}});
        let db = json!({"metadata": {"labels": {"tier": "db"}}});
        assert!(
            expr.evaluate_boolean(&[("self", &me), ("dep", &web)])
                .unwrap()
        );
        assert!(
            !expr
                .evaluate_boolean(&[("self", &me), ("dep", &db)])
                .unwrap()
        );
    }

    #[test]
    fn hostile_expressions_are_refused_before_they_run() {
        let long = format!("{}true", "true && ".repeat(600));
        assert!(
            Expression::parse(&long)
                .unwrap_err()
                .contains("longer than")
        );
        let chain = format!("{}1 == 1", "1 + ".repeat(400));
        let err = Expression::parse(&chain).unwrap_err();
        assert!(
            err.contains("nests more than") || err.contains("Recursion limit"),
            "{err}"
        );
        let nested = "a.all(x, a.all(y, a.all(z, a.all(w, true))))";
        assert!(
            Expression::parse(nested)
                .unwrap_err()
                .contains("nest 4 deep")
        );
        // Three deep over a list of 200: 201^3 iterations, refused at evaluation.
        let three = Expression::parse("a.all(x, a.all(y, a.all(z, x == y)))").unwrap();
        let wide = json!((0..200).collect::<Vec<_>>());
        let err = three.evaluate_boolean(&[("a", &wide)]).unwrap_err();
        assert!(err.contains("would iterate"), "{err}");
        let small = json!([1, 2, 3]);
        assert!(!three.evaluate_boolean(&[("a", &small)]).unwrap());
        // Chained comprehensions run one after another and do not multiply.
        let chained = Expression::parse("a.filter(x, x > 1).all(x, x > 0)").unwrap();
        let many = json!((1..5000).collect::<Vec<_>>());
        assert!(chained.evaluate_boolean(&[("a", &many)]).unwrap());
        // Ranges the expression builds count too: a long literal split into characters, or a
        // list summed with itself.
        let built = format!(
            "'{}'.split('').all(x, '{}'.split('').all(y, x == y))",
            "a".repeat(1500),
            "b".repeat(1500)
        );
        let e = Expression::parse(&built)
            .unwrap()
            .evaluate_boolean(&[])
            .unwrap_err();
        assert!(e.contains("would iterate"), "{e}");
        let summed = Expression::parse("(a + a + a + a).all(x, (a + a).all(y, x == y))").unwrap();
        let e = summed
            .evaluate_boolean(&[("a", &json!((0..300).collect::<Vec<_>>()))])
            .unwrap_err();
        assert!(e.contains("would iterate"), "{e}");
    }

    /// Shapes that recurse in a parser or an interpreter, at the longest length allowed, on a
    /// test thread's ordinary stack: refused or evaluated, never a stack overflow.
    #[test]
    fn the_longest_deep_expressions_do_not_overflow_the_stack() {
        let fill = |unit: &str, tail: &str| {
            let n = (MAX_EXPRESSION_BYTES - tail.len()) / unit.len();
            format!("{}{tail}", unit.repeat(n))
        };
        let closing = |open: &str, close: &str| {
            let n = MAX_EXPRESSION_BYTES / (open.len() + close.len()) - 1;
            format!("{}1{}", open.repeat(n), close.repeat(n))
        };
        for source in [
            fill("1+", "1"),
            fill("!", "true"),
            fill("-", "1"),
            fill("a.", "b"),
            fill("a[0]", ""),
            fill("true||", "true"),
            fill("f(", ""),
            closing("(", ")"),
            closing("[", "]"),
            closing("{1:", "}"),
            closing("x ? ", " : 1"),
        ] {
            assert!(source.len() <= MAX_EXPRESSION_BYTES, "{}", source.len());
            // Twice the longest allowed, past the length check: the stack has room to spare.
            let doubled = format!("{source} == {source}");
            let _ = parse_on_own_stack(&doubled);
            if let Ok(e) = Expression::parse(&source) {
                let _ = e.evaluate_boolean(&[("a", &json!([]))]);
            }
        }
    }

    #[test]
    fn growth_and_values_stay_bounded_and_unshown() {
        let replace = "'a'.replace('a', 'aaaa').replace('a', 'aaaa') == ''";
        assert!(
            Expression::parse(replace)
                .unwrap_err()
                .contains("'replace' is not available")
        );
        // Concatenation inside a loop counts as one more level: 101^2 > 1e6 is fine, 1001^2 not.
        let grow = Expression::parse("a.map(x, a + a).size() > 0").unwrap();
        let wide = json!((0..1000).collect::<Vec<_>>());
        assert!(
            grow.evaluate_boolean(&[("a", &wide)])
                .unwrap_err()
                .contains("would iterate")
        );
        // An error names no value of the object.
        let secret = json!({"password": "hunter2-plaintext"});
        let e = Expression::parse("data - 1 == 0")
            .unwrap()
            .evaluate_boolean(&[("data", &secret)])
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn strings_and_encoders_are_there() {
        let e =
            Expression::parse("s.lowerAscii() == 'abc' && base64.encode(b'x') == 'eA=='").unwrap();
        assert!(e.evaluate_boolean(&[("s", &json!("ABC"))]).unwrap());
    }
}
