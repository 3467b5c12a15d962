//! Expectations: assertions on object fields, object existence, and object counts.
//!
//! * `Dataset/default/demo status.phase == Bound`
//! * `Node/node-1 metadata.labels["fluid.io/f-default-demo"] == true`
//! * `Dataset/default/demo status.conditions[type=Ready].reason == DatasetReady`
//! * `Dataset/default/demo metadata.labels["fluid.io/dataset-id"] == $uid(Dataset/default/demo)`
//! * `PersistentVolumeClaim/default/demo absent`, `… exists`
//! * `count Pod/default role=juicefs-worker running == 2`, `count Node fluid.io/s-default-demo=true == 2`
//! * `mount Pod/default/demo-app data == broken`: what the pod reads through its dataset volume
//!   `data` on its node: `live`, `broken` (transport endpoint is not connected), `detached` (a
//!   mount other than the live FUSE mount) or `unmounted`
//!
//! Operators: `==`, `!=`, `>=`, `<=`, `>`, `<`, `contains`, `exists`, `absent`.

use model::effect::{Kind, ObjectRef};
use serde_json::Value;

use super::cluster::ClusterRead;
use super::parse::parse_reference;
use crate::apiserver::object::{kind_names, parse_kind};
use crate::apiserver::selector::parse_equality_selector;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `contains`: an array element, a map key or a substring.
    Contains,
    /// `exists`
    Exists,
    /// `absent`
    Absent,
}

const OPS: &str = "`==`, `!=`, `>=`, `<=`, `>`, `<`, `contains`, `exists`, `absent`";

fn parse_op(text: &str) -> Option<Op> {
    Some(match text {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        ">=" => Op::Ge,
        "<=" => Op::Le,
        ">" => Op::Gt,
        "<" => Op::Lt,
        "contains" => Op::Contains,
        "exists" => Op::Exists,
        "absent" => Op::Absent,
        _ => return None,
    })
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.name` or `["name"]`.
    Key(String),
    /// `[3]`.
    Index(usize),
    /// `[type=Ready]`: the array element whose `type` is `Ready`.
    Filter(String, String),
}

/// Parses `status.conditions[type=Ready].status`, `metadata.labels["a/b"]`.
pub fn parse_path(text: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Segment>| {
        if !word.is_empty() {
            out.push(Segment::Key(std::mem::take(word)));
        }
    };
    while i < bytes.len() {
        match bytes[i] {
            '.' => flush(&mut word, &mut out),
            '[' => {
                flush(&mut word, &mut out);
                let end = bytes[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i)
                    .ok_or_else(|| format!("path `{text}`: `[` without `]`"))?;
                let inner: String = bytes[i + 1..end].iter().collect();
                let inner = inner.trim();
                if let Some(quoted) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    out.push(Segment::Key(quoted.to_string()));
                } else if let Ok(index) = inner.parse::<usize>() {
                    out.push(Segment::Index(index));
                } else if let Some((field, value)) = inner.split_once('=') {
                    out.push(Segment::Filter(field.trim().to_string(), value.trim().to_string()));
                } else {
                    return Err(format!(
                        "path `{text}`: `[{inner}]` must be `[\"key\"]`, `[index]` or `[field=value]`"
                    ));
                }
                i = end;
            }
            c => word.push(c),
        }
        i += 1;
    }
    flush(&mut word, &mut out);
    if out.is_empty() {
        return Err(format!("path `{text}` is empty"));
    }
    Ok(out)
}

/// Follows `path` into `value`.
pub fn walk<'a>(value: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    let mut current = value;
    for segment in path {
        current = match segment {
            Segment::Key(key) => current.get(key)?,
            Segment::Index(index) => current.get(*index)?,
            Segment::Filter(field, wanted) => current
                .as_array()?
                .iter()
                .find(|item| item.get(field).and_then(Value::as_str) == Some(wanted.as_str()))?,
        };
    }
    Some(current)
}

/// An assertion.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The object exists (or not).
    Object {
        /// The object.
        object: ObjectRef,
        /// Wanted existence.
        exists: bool,
    },
    /// A field compares to a value.
    Field {
        /// The object.
        object: ObjectRef,
        /// The field path.
        path: Vec<Segment>,
        /// The comparison.
        op: Op,
        /// The value (not for `exists`/`absent`).
        value: String,
    },
    /// The number of objects of a kind matching a label selector compares to a number.
    Count {
        /// The kind.
        kind: Kind,
        /// The namespace, if only one.
        namespace: Option<String>,
        /// `key=value` / `key` requirements on labels.
        selector: Vec<(String, Option<String>)>,
        /// Only Running pods.
        running: bool,
        /// The comparison.
        op: Op,
        /// The number.
        value: i64,
    },
    /// How a pod's dataset volume serves it on its node (`==` or `!=`).
    Mount {
        /// The pod.
        pod: ObjectRef,
        /// The pod's volume name.
        volume: String,
        /// True for `==`.
        equal: bool,
        /// `live`, `broken`, `detached` or `unmounted`.
        state: String,
    },
}

/// The states a `mount` expectation names.
const MOUNT_STATES: &[&str] = &["live", "broken", "detached", "unmounted"];

/// An expectation as written, and its parsed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// The text.
    pub text: String,
    /// The check.
    pub check: Check,
}

impl Expectation {
    /// Parses an expectation; errors list the allowed forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let forms = "forms: `Kind/ns/name <path> <op> <value>`, `Kind/ns/name exists|absent`, `count Kind[/ns] [selector] [running] <op> <n>`, `mount Pod/ns/name <volume> ==|!= live|broken|detached|unmounted`";
        let words: Vec<&str> = text.split_whitespace().collect();
        let check = match words.as_slice() {
            [] => return Err(format!("expect: empty expectation; {forms}")),
            ["count", target, rest @ ..] => {
                let (kind_text, namespace) = match target.split_once('/') {
                    Some((k, ns)) => (k, Some(ns.to_string())),
                    None => (*target, None),
                };
                let kind = parse_kind(kind_text).ok_or_else(|| {
                    format!("expect `{text}`: unknown kind `{kind_text}`; allowed kinds: {}", kind_names())
                })?;
                let op_at = rest
                    .iter()
                    .position(|w| parse_op(w).is_some())
                    .ok_or_else(|| format!("expect `{text}`: no operator; allowed: {OPS}"))?;
                let mut selector = Vec::new();
                let mut running = false;
                for word in &rest[..op_at] {
                    if *word == "running" {
                        running = true;
                    } else {
                        selector.extend(parse_equality_selector(word).map_err(|e| format!("expect `{text}`: {e}"))?);
                    }
                }
                let op = parse_op(rest[op_at]).unwrap_or(Op::Eq);
                let value_text = rest
                    .get(op_at + 1)
                    .ok_or_else(|| format!("expect `{text}`: a count needs a number after the operator"))?;
                let value =
                    value_text.parse().map_err(|_| format!("expect `{text}`: `{value_text}` is not a number"))?;
                Check::Count { kind, namespace, selector, running, op, value }
            }
            ["mount", target, rest @ ..] => {
                let [volume, op_text, state] = rest else {
                    return Err(format!("expect `{text}`: write `mount Pod/ns/name <volume> == <state>`; {forms}"));
                };
                let pod = parse_reference(target).map_err(|e| format!("expect: {e}"))?;
                if pod.kind != Kind::Pod {
                    return Err(format!("expect `{text}`: `mount` looks at a Pod, not a {:?}", pod.kind));
                }
                let equal = match *op_text {
                    "==" => true,
                    "!=" => false,
                    _ => return Err(format!("expect `{text}`: `mount` compares with `==` or `!=`, not `{op_text}`")),
                };
                if !MOUNT_STATES.contains(state) {
                    return Err(format!(
                        "expect `{text}`: unknown mount state `{state}`; allowed: {}",
                        MOUNT_STATES.join(", ")
                    ));
                }
                Check::Mount { pod, volume: volume.to_string(), equal, state: state.to_string() }
            }
            [target, "exists"] => {
                Check::Object { object: parse_reference(target).map_err(|e| format!("expect: {e}"))?, exists: true }
            }
            [target, "absent"] => {
                Check::Object { object: parse_reference(target).map_err(|e| format!("expect: {e}"))?, exists: false }
            }
            [target, path, op_text, rest @ ..] => {
                let object = parse_reference(target).map_err(|e| format!("expect: {e}"))?;
                let path = parse_path(path).map_err(|e| format!("expect `{text}`: {e}"))?;
                let op = parse_op(op_text)
                    .ok_or_else(|| format!("expect `{text}`: unknown operator `{op_text}`; allowed: {OPS}"))?;
                let value = rest.join(" ");
                let value = value.trim_matches('"').to_string();
                if value.is_empty() && !matches!(op, Op::Exists | Op::Absent) {
                    return Err(format!("expect `{text}`: `{op_text}` needs a value after it"));
                }
                Check::Field { object, path, op, value }
            }
            _ => return Err(format!("expect `{text}` is incomplete; {forms}")),
        };
        Ok(Self { text: text.to_string(), check })
    }

    /// Evaluates against the cluster (the simulator or a real one): Ok, or what was seen instead.
    pub fn eval(&self, cluster: &dyn ClusterRead) -> Result<(), String> {
        match &self.check {
            Check::Object { object, exists } => {
                let found = cluster.object(object).is_some();
                if found == *exists {
                    Ok(())
                } else {
                    Err(if found { "it exists".to_string() } else { "it does not exist".to_string() })
                }
            }
            Check::Field { object, path, op, value } => {
                let wanted = substitute(value, cluster);
                let json = cluster.object(object);
                let actual = json.as_ref().and_then(|j| walk(j, path));
                if json.is_none() && !matches!(op, Op::Absent) {
                    return Err(format!("{object} does not exist"));
                }
                compare(actual, *op, &wanted)
            }
            Check::Count { kind, namespace, selector, running, op, value } => {
                let count = cluster.count(*kind, namespace.as_deref(), selector, *running);
                let ok = match op {
                    Op::Eq => count == *value,
                    Op::Ne => count != *value,
                    Op::Ge => count >= *value,
                    Op::Le => count <= *value,
                    Op::Gt => count > *value,
                    Op::Lt => count < *value,
                    _ => false,
                };
                if ok { Ok(()) } else { Err(format!("the count is {count}")) }
            }
            Check::Mount { pod, volume, equal, state } => {
                let seen = cluster.mount_state(pod, volume)?;
                if (seen == state) == *equal { Ok(()) } else { Err(format!("it is {seen}")) }
            }
        }
    }
}

/// Replaces each `$uid(Kind/ns/name)` in `value` with that object's UID.
fn substitute(value: &str, cluster: &dyn ClusterRead) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$uid(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let Some(end) = after.find(')') else { break };
        let inner = &after[..end];
        let uid = parse_reference(inner)
            .ok()
            .and_then(|r| cluster.object(&r)?.pointer("/metadata/uid")?.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("(no uid: {inner} does not exist)"));
        out.push_str(&uid);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compare(actual: Option<&Value>, op: Op, wanted: &str) -> Result<(), String> {
    let shown = actual.map(|v| format!("it is {}", scalar(v))).unwrap_or_else(|| "it is absent".to_string());
    let ok = match (op, actual) {
        (Op::Exists, a) => a.is_some_and(|v| !v.is_null()),
        (Op::Absent, a) => a.is_none_or(Value::is_null),
        (_, None) => false,
        (Op::Eq, Some(v)) => scalar(v) == wanted,
        (Op::Ne, Some(v)) => scalar(v) != wanted,
        (Op::Contains, Some(Value::Array(items))) => items.iter().any(|i| scalar(i) == wanted),
        (Op::Contains, Some(Value::Object(map))) => map.contains_key(wanted),
        (Op::Contains, Some(v)) => scalar(v).contains(wanted),
        (op, Some(v)) => {
            let (Ok(a), Ok(b)) = (scalar(v).parse::<f64>(), wanted.parse::<f64>()) else {
                return Err(format!("{shown}, which does not compare as a number with {wanted}"));
            };
            match op {
                Op::Ge => a >= b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                Op::Lt => a < b,
                _ => false,
            }
        }
    };
    if ok { Ok(()) } else { Err(shown) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_and_reject_clearly() {
        let e = Expectation::parse("Dataset/default/demo status.conditions[type=Ready].status == True").unwrap();
        assert!(matches!(e.check, Check::Field { op: Op::Eq, .. }));
        let e = Expectation::parse(r#"Node/node-1 metadata.labels["fluid.io/f-default-demo"] exists"#).unwrap();
        assert!(matches!(e.check, Check::Field { op: Op::Exists, .. }));
        assert!(Expectation::parse("count Pod/default role=juicefs-worker running == 2").is_ok());
        let err = Expectation::parse("Dataset/default/demo status.phase ~= Bound").unwrap_err();
        assert!(err.contains("unknown operator `~=`") && err.contains("contains"), "{err}");
        let err = Expectation::parse("Datasets/default/demo exists").unwrap_err();
        assert!(err.contains("allowed kinds"), "{err}");
        let value = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let path = parse_path("status.conditions[type=Ready].status").unwrap();
        assert_eq!(walk(&value, &path), Some(&Value::from("True")));
    }
}
