//! Label selectors and node selector terms, as the apiserver and the scheduler evaluate them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// True when `labels` match `selector` (`matchLabels` and every `matchExpressions` entry).
/// An empty selector matches everything, as in Kubernetes.
pub fn matches_label_selector(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|wanted| wanted.iter().all(|(key, value)| labels.get(key) == Some(value)));
    match_labels_ok
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|expressions| expressions.iter().all(|e| matches_label_requirement(e, labels)))
}

fn matches_label_requirement(requirement: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or(&[]);
    let actual = labels.get(&requirement.key);
    match requirement.operator.as_str() {
        "In" => actual.is_some_and(|v| values.contains(v)),
        "NotIn" => actual.is_none_or(|v| !values.contains(v)),
        "Exists" => actual.is_some(),
        "DoesNotExist" => actual.is_none(),
        _ => false,
    }
}

/// True when a node with `name` and `labels` satisfies `requirement` (labels or `metadata.name` field).
pub fn matches_node_requirement(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or(&[]);
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(actual), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|v| v.parse::<i64>().ok()))
            else {
                return false;
            };
            if requirement.operator == "Gt" { actual > bound } else { actual < bound }
        }
        _ => false,
    }
}

/// True when the node matches the term: all its label expressions and all its field expressions.
pub fn matches_node_term(term: &NodeSelectorTerm, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if expressions.is_empty() && fields.is_empty() {
        // An empty term matches no objects (Kubernetes' rule).
        return false;
    }
    let name = name.to_string();
    expressions.iter().all(|r| matches_node_requirement(r, labels.get(&r.key)))
        && fields.iter().all(|r| r.key == "metadata.name" && matches_node_requirement(r, Some(&name)))
}

/// Parses a `key=value,key2=value2` selector (also `key` for "exists") into a predicate list.
pub fn parse_equality_selector(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((key, value)) if !key.is_empty() => out.push((key.to_string(), Some(value.to_string()))),
            Some(_) => return Err(format!("selector `{part}` has an empty key")),
            None => out.push((part.to_string(), None)),
        }
    }
    Ok(out)
}

/// True when `labels` satisfy every `(key, value)` pair (a `None` value means the key exists).
pub fn matches_equality(selector: &[(String, Option<String>)], labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(key, value)| match (labels.and_then(|l| l.get(key)), value) {
        (Some(actual), Some(wanted)) => actual == wanted,
        (Some(_), None) => true,
        (None, _) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_kubernetes_rules() {
        let labels = BTreeMap::from([("app".to_string(), "juicefs".to_string())]);
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "juicefs".to_string())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "role".to_string(),
                operator: "DoesNotExist".to_string(),
                values: None,
            }]),
        };
        assert!(matches_label_selector(&selector, Some(&labels)));
        assert!(matches_label_selector(&LabelSelector::default(), None));
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_string(),
                operator: "In".to_string(),
                values: Some(vec!["node-1".to_string()]),
            }]),
        };
        assert!(matches_node_term(&term, "node-1", None));
        assert!(!matches_node_term(&term, "node-2", None));
        assert!(!matches_node_term(&NodeSelectorTerm::default(), "node-1", None));
    }
}
