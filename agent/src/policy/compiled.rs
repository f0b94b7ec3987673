//! The fast path: the policy compiled to regorus' bytecode VM (RVM), for the verdict of
//! requests the policy allows.
//!
//! regorus' tree-walking interpreter runs genpolicy's rules in milliseconds per
//! CreateContainer; the same rules compiled to RVM bytecode run several times faster.
//! The RVM does not implement `print` (genpolicy's rules call it some 300 times), so the
//! compiled copy is made from the policy with its `print(...)` statements replaced by
//! `true` ([`without_prints`]). In Rego a `print` statement always succeeds and binds
//! nothing: only an error while evaluating one of its arguments could change the
//! outcome, so only prints whose arguments cannot fail are dropped (literals, variables
//! and references into them or `input`, constant rules, builtin calls on such arguments:
//! a builtin's error is an undefined value, not a failure, with `strict_builtin_errors`
//! off); a policy with any other print gets no compiled copy and is evaluated by the
//! interpreter alone.
//!
//! The interpreter stays the reference: the compiled copy only ever answers "allowed";
//! anything else it says (denied, undefined, an error, a limit) sends the request to the
//! interpreter, which decides and explains the denial with the policy's prints.

use std::collections::BTreeSet;
use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::RegoVM;
use regorus::unstable::{Expr, Literal, Module, Query, Rule, RuleHead};
use regorus::Value;

/// Instructions one evaluation may execute (regorus' default, 25 000, is about one
/// CreateContainer of a two-container pod). Past it the interpreter decides.
const MAX_INSTRUCTIONS: usize = 50_000_000;

/// The compiled copy of a policy, with its own copy of `data`.
pub(super) struct Compiled {
    vm: RegoVM,
    /// The rules the program has entry points for (`data.<package>.<rule>`).
    entry_points: BTreeSet<String>,
}

impl Compiled {
    /// Compiles `modules` (name, text without prints) for the `rules` of package
    /// `package` that the policy defines, on `data`.
    pub(super) fn new(
        modules: &[(String, String)],
        package: &str,
        rules: &[&str],
        data: Value,
        configure: impl Fn(&mut regorus::Engine) -> Result<(), String>,
    ) -> Result<Compiled, String> {
        let mut engine = regorus::Engine::new();
        configure(&mut engine)?;
        for (name, text) in modules {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| format!("{e:#}"))?;
        }
        let defined = defined_rules(engine.get_modules());
        let entry_points: BTreeSet<String> = rules
            .iter()
            .filter(|r| defined.contains(**r))
            .map(|r| format!("{package}.{r}"))
            .collect();
        let Some(first) = entry_points.first() else {
            return Err("the policy defines none of the request rules".to_string());
        };
        let compiled = engine
            .compile_with_entrypoint(&first.as_str().into())
            .map_err(|e| format!("{e:#}"))?;
        let entries: Vec<&str> = entry_points.iter().map(String::as_str).collect();
        let program: Arc<Program> =
            Compiler::compile_from_policy(&compiled, &entries).map_err(|e| format!("{e:#}"))?;
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_data(data).map_err(|e| format!("{e:#}"))?;
        Ok(Compiled { vm, entry_points })
    }

    /// Evaluates `rule` (`data.<package>.<rule>`) on `input`: `None` when the program has
    /// no entry point for it.
    pub(super) fn eval(&mut self, rule: &str, input: Value) -> Option<Result<Value, String>> {
        if !self.entry_points.contains(rule) {
            return None;
        }
        self.vm.set_input(input);
        let result = self
            .vm
            .execute_entry_point_by_name(rule)
            .map_err(|e| e.to_string());
        // The input is not kept between requests.
        self.vm.set_input(Value::Null);
        Some(result)
    }

    /// Replaces the copy of `data` (after the policy's ops).
    pub(super) fn set_data(&mut self, data: Value) -> Result<(), String> {
        self.vm.set_data(data).map_err(|e| e.to_string())
    }
}

/// The names of the rules and functions `modules` define (first component of each head).
fn defined_rules(modules: &[regorus::unstable::Ref<Module>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for module in modules {
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            if let Some(name) = root_var(refr) {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The variable a reference starts from (`a` of `a.b[c]`).
fn root_var(mut e: &Expr) -> Option<&str> {
    loop {
        match e {
            Expr::Var { value, .. } => return value.as_string().ok().map(|s| s.as_ref()),
            Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => e = refr,
            _ => return None,
        }
    }
}

/// What [`without_prints`] found.
#[derive(Debug)]
pub(super) struct Stripped {
    /// The modules' texts, each `print(...)` statement replaced by `true`.
    pub texts: Vec<String>,
    /// How many were replaced.
    pub prints: usize,
}

/// The texts of `modules` (parsed by regorus, in the same order as `texts`) with every
/// `print(...)` statement replaced by `true`; `Err` says why a print cannot be dropped
/// (a print anywhere but as a statement, one with an argument that could fail, a rule
/// named `print`). `constants` are rules whose value cannot fail (an argument may
/// read them).
pub(super) fn without_prints(
    modules: &[regorus::unstable::Ref<Module>],
    texts: &[&str],
    constants: &BTreeSet<String>,
) -> Result<Stripped, String> {
    let rules = defined_rules(modules);
    if rules.contains("print") {
        return Err("the policy defines its own `print`".to_string());
    }
    let mut out = Vec::with_capacity(texts.len());
    let mut total = 0;
    for (module, text) in modules.iter().zip(texts) {
        let mut walk = Walk {
            rules: &rules,
            constants,
            spans: Vec::new(),
        };
        for rule in &module.policy {
            walk.rule(rule)?;
        }
        // Replace from the end, so earlier offsets stay valid.
        let mut spans = walk.spans;
        spans.sort_unstable();
        spans.dedup();
        let mut stripped = text.to_string();
        for &(start, end) in spans.iter().rev() {
            let call = stripped
                .get(start..end)
                .ok_or_else(|| format!("print at bytes {start}..{end} is not in the text"))?;
            if !(call.starts_with("print") && call.ends_with(')')) {
                return Err(format!("print at bytes {start}..{end} reads {call:?}"));
            }
            stripped.replace_range(start..end, "true");
        }
        total += spans.len();
        out.push(stripped);
    }
    Ok(Stripped {
        texts: out,
        prints: total,
    })
}

struct Walk<'a> {
    rules: &'a BTreeSet<String>,
    constants: &'a BTreeSet<String>,
    /// Byte ranges of the print calls to replace.
    spans: Vec<(usize, usize)>,
}

impl Walk<'_> {
    fn rule(&mut self, rule: &Rule) -> Result<(), String> {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.expr(refr)?;
                        if let Some(a) = assign {
                            self.expr(&a.value)?;
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.expr(refr)?;
                        if let Some(k) = key {
                            self.expr(k)?;
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.expr(refr)?;
                        for a in args {
                            self.expr(a)?;
                        }
                        if let Some(a) = assign {
                            self.expr(&a.value)?;
                        }
                    }
                }
                for body in bodies {
                    if let Some(a) = &body.assign {
                        self.expr(&a.value)?;
                    }
                    self.query(&body.query)?;
                }
                Ok(())
            }
            Rule::Default {
                refr, args, value, ..
            } => {
                self.expr(refr)?;
                for a in args {
                    self.expr(a)?;
                }
                self.expr(value)
            }
        }
    }

    fn query(&mut self, query: &Query) -> Result<(), String> {
        for stmt in &query.stmts {
            for w in &stmt.with_mods {
                self.expr(&w.refr)?;
                self.expr(&w.r#as)?;
            }
            match &stmt.literal {
                Literal::Expr { expr, .. } => {
                    if let Some(params) = print_call(expr) {
                        let span = expr.span();
                        if !stmt.with_mods.is_empty() {
                            return Err(format!("line {}: print with `with`", span.line));
                        }
                        for p in params {
                            if !self.harmless(p) {
                                return Err(format!(
                                    "line {}: print argument `{}` could fail",
                                    span.line,
                                    p.span().text()
                                ));
                            }
                        }
                        self.spans.push((span.start as usize, span.end as usize));
                    } else {
                        self.expr(expr)?;
                    }
                }
                Literal::NotExpr { expr, .. } => self.expr(expr)?,
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(k) = key {
                        self.expr(k)?;
                    }
                    self.expr(value)?;
                    self.expr(collection)?;
                }
                Literal::Every { domain, query, .. } => {
                    self.expr(domain)?;
                    self.query(query)?;
                }
            }
        }
        Ok(())
    }

    /// Looks for prints inside an expression: there, they cannot be dropped.
    fn expr(&mut self, e: &Expr) -> Result<(), String> {
        if print_call(e).is_some() {
            return Err(format!(
                "line {}: print inside an expression",
                e.span().line
            ));
        }
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. }
            | Expr::Var { .. } => Ok(()),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                items.iter().try_for_each(|i| self.expr(i))
            }
            Expr::Object { fields, .. } => fields.iter().try_for_each(|(_, k, v)| {
                self.expr(k)?;
                self.expr(v)
            }),
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term)?;
                self.query(query)
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key)?;
                self.expr(value)?;
                self.query(query)
            }
            Expr::Call { fcn, params, .. } => {
                self.expr(fcn)?;
                params.iter().try_for_each(|p| self.expr(p))
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::RefDot { refr, .. } => self.expr(refr),
            Expr::RefBrack { refr, index, .. } => {
                self.expr(refr)?;
                self.expr(index)
            }
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs)?;
                self.expr(rhs)
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k)?;
                }
                self.expr(value)?;
                self.expr(collection)
            }
            // A kind of expression this walk does not know (a regorus extension): it
            // might hide a print, so no compiled copy.
            #[allow(unreachable_patterns)]
            _ => Err(format!(
                "line {}: unknown kind of expression",
                e.span().line
            )),
        }
    }

    /// An argument whose evaluation cannot fail: a literal, a variable (a local, `input`,
    /// or a rule in `constants`), a reference into one with such indexes, an array or
    /// set of such, a builtin call on such. Rules and functions (which could fail:
    /// conflicting values) and `data` (which reaches them) are not.
    fn harmless(&self, e: &Expr) -> bool {
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => true,
            Expr::Var { value, .. } => match value.as_string() {
                Ok(name) => {
                    let name: &str = name.as_ref();
                    name != "data"
                        && name != "print"
                        && (!self.rules.contains(name) || self.constants.contains(name))
                }
                Err(_) => false,
            },
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                items.iter().all(|i| self.harmless(i))
            }
            Expr::RefDot { refr, .. } => self.harmless(refr),
            Expr::RefBrack { refr, index, .. } => self.harmless(refr) && self.harmless(index),
            // A builtin's error makes its value undefined (the policy is evaluated with
            // `strict_builtin_errors` off, see `configure`), which print shows as such.
            Expr::Call { fcn, params, .. } => {
                self.builtin(fcn) && params.iter().all(|p| self.harmless(p))
            }
            _ => false,
        }
    }

    /// `fcn` names one of regorus' builtins (`concat`, `array.concat`) that the policy
    /// does not shadow.
    fn builtin(&self, fcn: &Expr) -> bool {
        let Some(path) = dotted(fcn) else {
            return false;
        };
        let root = path.split('.').next().unwrap_or_default();
        !self.rules.contains(root)
            && root != "print"
            && regorus::unstable::BUILTINS.contains_key(path.as_str())
    }
}

/// `a.b.c` of a reference made of a variable and fields.
fn dotted(e: &Expr) -> Option<String> {
    match e {
        Expr::Var { value, .. } => value.as_string().ok().map(|s| s.to_string()),
        Expr::RefDot { refr, field, .. } => {
            let field = field.1.as_string().ok()?;
            Some(format!("{}.{}", dotted(refr)?, field.as_ref()))
        }
        _ => None,
    }
}

/// The arguments of `print(...)`.
fn print_call(e: &Expr) -> Option<&[regorus::unstable::Ref<Expr>]> {
    match e {
        Expr::Call { fcn, params, .. } => match fcn.as_ref() {
            Expr::Var { value, .. } if value.as_string().is_ok_and(|s| s.as_ref() == "print") => {
                Some(params)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The rules of `modules` defined once, without a body, as a value that cannot fail:
/// a JSON-like literal, or `data.<key>` for one of `data_keys` (data we add, outside
/// every package: genpolicy's hoisted `policy_data`).
pub(super) fn constant_rules(
    modules: &[regorus::unstable::Ref<Module>],
    data_keys: &[&str],
) -> BTreeSet<String> {
    let mut seen: std::collections::BTreeMap<String, (usize, bool)> = Default::default();
    for module in modules {
        for rule in &module.policy {
            let (name, constant) = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, assign, .. },
                    bodies,
                    ..
                } => {
                    let constant = bodies
                        .iter()
                        .all(|b| b.assign.is_none() && b.query.stmts.is_empty())
                        && matches!(refr.as_ref(), Expr::Var { .. })
                        && assign
                            .as_ref()
                            .is_some_and(|a| constant_value(&a.value, data_keys));
                    (root_var(refr), constant)
                }
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => (root_var(refr), false),
                },
                Rule::Default { refr, .. } => (root_var(refr), false),
            };
            if let Some(name) = name {
                let entry = seen.entry(name.to_string()).or_insert((0, true));
                entry.0 += 1;
                entry.1 &= constant;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, (count, constant))| *count == 1 && *constant)
        .map(|(name, _)| name)
        .collect()
}

fn constant_value(e: &Expr, data_keys: &[&str]) -> bool {
    match e {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. } => true,
        Expr::Array { items, .. } => items.iter().all(|i| constant_value(i, data_keys)),
        // String keys, each once (a repeated key would be a conflict).
        Expr::Object { fields, .. } => {
            let mut keys = BTreeSet::new();
            fields.iter().all(|(_, k, v)| match k.as_ref() {
                Expr::String { value, .. } => {
                    keys.insert(value.clone()) && constant_value(v, data_keys)
                }
                _ => false,
            })
        }
        Expr::RefDot { refr, field, .. } => {
            matches!(refr.as_ref(), Expr::Var { value, .. } if value.as_string().is_ok_and(|s| s.as_ref() == "data"))
                && field
                    .1
                    .as_string()
                    .is_ok_and(|f| data_keys.contains(&f.as_ref()))
        }
        _ => false,
    }
}
