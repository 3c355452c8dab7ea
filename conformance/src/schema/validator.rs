//! A small JSON Schema validator for the keywords the protocol's schemas use.
//!
//! A full validator would bring a large dependency tree into a tool people install
//! in CI; the protocol's schemas need only a handful of keywords. Compiling a schema
//! that uses any other keyword is an error, so nothing is silently left unchecked.
//!
//! Supported: `type`, `const`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`, `minLength`, `minimum`, `maximum`,
//! `pattern`, `oneOf`, `anyOf`, and `$ref` to `#/$defs/NAME`; `$schema`, `$id`,
//! `$defs`, `title`, `description`, `examples` and `$comment` are annotations.
//!
//! ```
//! use conformance::schema::Schema;
//! use serde_json::json;
//!
//! let schema = Schema::compile(json!({
//!     "type": "object",
//!     "required": ["name"],
//!     "properties": {"name": {"type": "string", "minLength": 1}},
//! }))?;
//! assert!(schema.validate(&json!({"name": "a"})).is_empty());
//! let problems = schema.validate(&json!({"name": ""}));
//! assert_eq!(problems[0].to_string(), "/name: is shorter than 1 character(s)");
//! # Ok::<(), conformance::schema::SchemaError>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// A schema that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema at {path}: {problem}")]
pub struct SchemaError {
    /// Where in the schema, as a JSON pointer.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// One way an instance breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// Where in the instance, as a JSON pointer (`""` for the whole value).
    pub path: String,
    /// What is wrong, for a person.
    pub problem: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(message)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.problem)
    }
}

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "title",
    "description",
    "examples",
    "$comment",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "boolean",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::String => "string",
            JsonType::Array => "array",
            JsonType::Object => "object",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            JsonType::Null => v.is_null(),
            JsonType::Boolean => v.is_boolean(),
            JsonType::Integer => v.is_i64() || v.is_u64(),
            JsonType::Number => v.is_number(),
            JsonType::String => v.is_string(),
            JsonType::Array => v.is_array(),
            JsonType::Object => v.is_object(),
        }
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What `additionalProperties` allows.
#[derive(Debug, Default, Clone, Copy)]
enum Additional {
    #[default]
    Any,
    Forbidden,
    Schema(usize),
}

/// One compiled schema node.
#[derive(Debug, Default)]
struct Node {
    types: Option<Vec<JsonType>>,
    constant: Option<Value>,
    enumeration: Option<Vec<Value>>,
    properties: Vec<(String, usize)>,
    required: Vec<String>,
    additional: Additional,
    items: Option<usize>,
    min_items: Option<u64>,
    min_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    pattern: Option<regex::Regex>,
    one_of: Vec<usize>,
    any_of: Vec<usize>,
    reference: Option<String>,
}

/// A compiled schema, ready to validate values.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
    defs: HashMap<String, usize>,
    root: usize,
}

impl Schema {
    /// Compiles a schema value, refusing keywords this validator does not implement.
    pub fn compile(schema: Value) -> Result<Schema, SchemaError> {
        let mut s = Schema {
            nodes: vec![],
            defs: HashMap::new(),
            root: 0,
        };
        if let Some(defs) = schema.get("$defs") {
            let Value::Object(defs) = defs else {
                return Err(err("/$defs", "must be an object"));
            };
            for (name, def) in defs {
                let id = s.node(def, &format!("/$defs/{name}"))?;
                s.defs.insert(name.clone(), id);
            }
        }
        s.root = s.node(&schema, "")?;
        for (i, n) in s.nodes.iter().enumerate() {
            if let Some(r) = &n.reference {
                if !s.defs.contains_key(r) {
                    return Err(err(
                        &format!("(node {i})"),
                        &format!("$ref to undefined #/$defs/{r}"),
                    ));
                }
            }
        }
        Ok(s)
    }

    fn node(&mut self, v: &Value, path: &str) -> Result<usize, SchemaError> {
        let Value::Object(obj) = v else {
            return Err(err(path, "a schema must be an object"));
        };
        let mut n = Node::default();
        for (key, val) in obj {
            let here = format!("{path}/{key}");
            match key.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "type" => {
                    let names: Vec<&Value> = match val {
                        Value::Array(a) => a.iter().collect(),
                        one => vec![one],
                    };
                    let mut types = vec![];
                    for t in names {
                        let t = t
                            .as_str()
                            .and_then(JsonType::parse)
                            .ok_or_else(|| err(&here, &format!("unknown type {t}")))?;
                        types.push(t);
                    }
                    n.types = Some(types);
                }
                "const" => n.constant = Some(val.clone()),
                "enum" => {
                    n.enumeration = Some(
                        val.as_array()
                            .ok_or_else(|| err(&here, "must be an array"))?
                            .clone(),
                    )
                }
                "properties" => {
                    let props = val
                        .as_object()
                        .ok_or_else(|| err(&here, "must be an object"))?;
                    for (name, p) in props {
                        let id = self.node(p, &format!("{here}/{name}"))?;
                        n.properties.push((name.clone(), id));
                    }
                }
                "required" => {
                    n.required = val
                        .as_array()
                        .ok_or_else(|| err(&here, "must be an array"))?
                        .iter()
                        .map(|r| {
                            r.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| err(&here, "must hold strings"))
                        })
                        .collect::<Result<_, _>>()?
                }
                "additionalProperties" => {
                    n.additional = match val {
                        Value::Bool(true) => Additional::Any,
                        Value::Bool(false) => Additional::Forbidden,
                        other => Additional::Schema(self.node(other, &here)?),
                    }
                }
                "items" => n.items = Some(self.node(val, &here)?),
                "minItems" => n.min_items = Some(uint(val, &here)?),
                "minLength" => n.min_length = Some(uint(val, &here)?),
                "minimum" => {
                    n.minimum = Some(val.as_f64().ok_or_else(|| err(&here, "must be a number"))?)
                }
                "maximum" => {
                    n.maximum = Some(val.as_f64().ok_or_else(|| err(&here, "must be a number"))?)
                }
                "pattern" => {
                    let p = val.as_str().ok_or_else(|| err(&here, "must be a string"))?;
                    n.pattern = Some(
                        regex::Regex::new(p)
                            .map_err(|e| err(&here, &format!("bad pattern: {e}")))?,
                    );
                }
                "oneOf" | "anyOf" => {
                    let branches = val
                        .as_array()
                        .ok_or_else(|| err(&here, "must be an array"))?;
                    let mut ids = vec![];
                    for (i, b) in branches.iter().enumerate() {
                        ids.push(self.node(b, &format!("{here}/{i}"))?);
                    }
                    if key == "oneOf" {
                        n.one_of = ids;
                    } else {
                        n.any_of = ids;
                    }
                }
                "$ref" => {
                    let r = val.as_str().unwrap_or_default();
                    let name = r.strip_prefix("#/$defs/").ok_or_else(|| {
                        err(&here, "only references to #/$defs/NAME are supported")
                    })?;
                    n.reference = Some(name.to_owned());
                }
                other => {
                    return Err(err(
                        &here,
                        &format!("keyword {other:?} is not supported by this validator"),
                    ))
                }
            }
        }
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }

    /// Every way `value` breaks the schema (empty when it conforms).
    pub fn validate(&self, value: &Value) -> Vec<SchemaViolation> {
        let mut out = vec![];
        self.check(self.root, value, "", &mut out);
        out
    }

    fn check(&self, id: usize, v: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
        let n = &self.nodes[id];
        let mut bad = |problem: String| {
            out.push(SchemaViolation {
                path: path.to_owned(),
                problem,
            })
        };
        if let Some(r) = &n.reference {
            if let Some(&target) = self.defs.get(r) {
                self.check(target, v, path, out);
            }
            return;
        }
        if let Some(types) = &n.types {
            if !types.iter().any(|t| t.matches(v)) {
                let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
                bad(format!(
                    "must be {}, got {}",
                    names.join(" or "),
                    type_of(v)
                ));
                return;
            }
        }
        if let Some(c) = &n.constant {
            if v != c {
                bad(format!("must be {c}, got {v}"));
            }
        }
        if let Some(options) = &n.enumeration {
            if !options.contains(v) {
                let shown: Vec<String> = options.iter().map(Value::to_string).collect();
                bad(format!("must be one of {}, got {v}", shown.join(", ")));
            }
        }
        if let Value::String(s) = v {
            if let Some(min) = n.min_length {
                if (s.chars().count() as u64) < min {
                    bad(format!("is shorter than {min} character(s)"));
                }
            }
            if let Some(p) = &n.pattern {
                if !p.is_match(s) {
                    bad(format!("does not match the pattern {}", p.as_str()));
                }
            }
        }
        if let Some(x) = v.as_f64() {
            if n.minimum.is_some_and(|m| x < m) || n.maximum.is_some_and(|m| x > m) {
                bad(format!("{v} is out of range"));
            }
        }
        if let Value::Array(items) = v {
            if let Some(min) = n.min_items {
                if (items.len() as u64) < min {
                    bad(format!("must have at least {min} item(s)"));
                }
            }
            if let Some(item) = n.items {
                for (i, it) in items.iter().enumerate() {
                    self.check(item, it, &format!("{path}/{i}"), out);
                }
            }
        }
        if let Value::Object(obj) = v {
            self.check_object(n, obj, path, out);
        }
        if !n.any_of.is_empty() && !n.any_of.iter().any(|&b| self.matches(b, v)) {
            self.no_branch(&n.any_of, v, path, out);
        }
        if !n.one_of.is_empty() {
            let matching = n.one_of.iter().filter(|&&b| self.matches(b, v)).count();
            match matching {
                1 => {}
                0 => self.no_branch(&n.one_of, v, path, out),
                k => out.push(SchemaViolation {
                    path: path.to_owned(),
                    problem: format!(
                        "matches {k} of the allowed shapes; it must match exactly one"
                    ),
                }),
            }
        }
    }

    fn check_object(
        &self,
        n: &Node,
        obj: &Map<String, Value>,
        path: &str,
        out: &mut Vec<SchemaViolation>,
    ) {
        for r in &n.required {
            if !obj.contains_key(r) {
                out.push(SchemaViolation {
                    path: path.to_owned(),
                    problem: format!("missing required field `{r}`"),
                });
            }
        }
        for (key, val) in obj {
            let here = format!("{path}/{key}");
            match n.properties.iter().find(|(name, _)| name == key) {
                Some(&(_, p)) => self.check(p, val, &here, out),
                None => match n.additional {
                    Additional::Forbidden => out.push(SchemaViolation {
                        path: here,
                        problem: "is not an allowed field".into(),
                    }),
                    Additional::Schema(p) => self.check(p, val, &here, out),
                    Additional::Any => {}
                },
            }
        }
    }

    fn matches(&self, id: usize, v: &Value) -> bool {
        let mut out = vec![];
        self.check(id, v, "", &mut out);
        out.is_empty()
    }

    /// The target of a `$ref`, or the node itself.
    fn resolve(&self, id: usize) -> &Node {
        let n = &self.nodes[id];
        match n.reference.as_ref().and_then(|r| self.defs.get(r)) {
            Some(&t) => &self.nodes[t],
            None => n,
        }
    }

    /// The `const` a branch requires of `key`, if any (the discriminator).
    fn branch_const(&self, branch: usize, key: &str) -> Option<&Value> {
        let n = self.resolve(branch);
        let (_, p) = n.properties.iter().find(|(name, _)| name == key)?;
        self.resolve(*p).constant.as_ref()
    }

    /// Explains why no branch matched: when a field such as `event` or `type`
    /// picks a branch, that branch's own problems; else the allowed values.
    fn no_branch(&self, branches: &[usize], v: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
        for key in ["event", "type"] {
            let allowed: Vec<&Value> = branches
                .iter()
                .filter_map(|&b| self.branch_const(b, key))
                .collect();
            if allowed.len() != branches.len() {
                continue;
            }
            let Some(got) = v.get(key) else {
                out.push(SchemaViolation {
                    path: path.to_owned(),
                    problem: format!("missing required field `{key}`"),
                });
                return;
            };
            if let Some(&b) = branches
                .iter()
                .find(|&&b| self.branch_const(b, key) == Some(got))
            {
                self.check(b, v, path, out);
                return;
            }
            let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            out.push(SchemaViolation {
                path: format!("{path}/{key}"),
                problem: format!("{got} is not one of {}", names.join(", ")),
            });
            return;
        }
        let mut problems = vec![];
        for &b in branches {
            let mut o = vec![];
            self.check(b, v, path, &mut o);
            problems.extend(o.into_iter().map(|p| p.to_string()));
        }
        out.push(SchemaViolation {
            path: path.to_owned(),
            problem: format!(
                "matches none of the allowed shapes ({})",
                problems.join("; ")
            ),
        });
    }
}

fn err(path: &str, problem: &str) -> SchemaError {
    SchemaError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        problem: problem.into(),
    }
}

fn uint(v: &Value, path: &str) -> Result<u64, SchemaError> {
    v.as_u64()
        .ok_or_else(|| err(path, "must be a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsupported_keywords_are_refused() {
        let e = Schema::compile(json!({"type": "string", "format": "uri"})).unwrap_err();
        assert!(e.problem.contains("\"format\" is not supported"), "{e}");
        let e = Schema::compile(json!({"$ref": "http://x/y"})).unwrap_err();
        assert!(e.problem.contains("#/$defs"), "{e}");
        let e = Schema::compile(json!({"$ref": "#/$defs/nope"})).unwrap_err();
        assert!(e.problem.contains("undefined"), "{e}");
    }

    #[test]
    fn keywords_check_what_they_say() {
        let s = Schema::compile(json!({
            "type": "object",
            "required": ["a", "b"],
            "additionalProperties": false,
            "properties": {
                "a": {"type": ["integer", "null"], "minimum": 1, "maximum": 3},
                "b": {"type": "array", "minItems": 1, "items": {"enum": ["x", "y"]}},
                "c": {"type": "string", "pattern": "^[0-9]+$"},
            },
        }))
        .unwrap();
        assert!(s
            .validate(&json!({"a": 2, "b": ["x"], "c": "12"}))
            .is_empty());
        assert!(s.validate(&json!({"a": null, "b": ["y"]})).is_empty());
        let shown =
            |v: Value| -> Vec<String> { s.validate(&v).iter().map(|p| p.to_string()).collect() };
        assert_eq!(
            shown(json!({"a": 9, "b": [], "c": "1x", "d": 1})),
            vec![
                "/a: 9 is out of range",
                "/b: must have at least 1 item(s)",
                "/c: does not match the pattern ^[0-9]+$",
                "/d: is not an allowed field",
            ]
        );
        assert_eq!(
            shown(json!({"a": 1.5, "b": ["z"]})),
            vec![
                "/a: must be integer or null, got a number",
                "/b/0: must be one of \"x\", \"y\", got \"z\"",
            ]
        );
        assert_eq!(
            shown(json!([1])),
            vec!["(message): must be object, got an array"]
        );
    }

    #[test]
    fn one_of_reports_the_branch_its_discriminator_picks() {
        let s = Schema::compile(json!({
            "oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}],
            "$defs": {
                "a": {"type": "object", "required": ["type", "x"], "properties": {"type": {"const": "a"}, "x": {"type": "string"}}},
                "b": {"type": "object", "required": ["type"], "properties": {"type": {"const": "b"}}},
            },
        }))
        .unwrap();
        assert!(s.validate(&json!({"type": "b"})).is_empty());
        let p = s.validate(&json!({"type": "a", "x": 1}));
        assert_eq!(p[0].to_string(), "/x: must be string, got an integer");
        let p = s.validate(&json!({"type": "c"}));
        assert_eq!(p[0].to_string(), "/type: \"c\" is not one of \"a\", \"b\"");
        let p = s.validate(&json!({}));
        assert_eq!(p[0].to_string(), "(message): missing required field `type`");
    }
}
