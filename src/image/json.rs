//! Canonical JSON: keys sorted, no insignificant white space. Everything we
//! hash goes through here, so key order never depends on struct layout.

use serde::Serialize;

pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json::Value keeps objects in a BTreeMap (the preserve_order feature is
    // off), so a round trip through it sorts every object's keys.
    let v = serde_json::to_value(value).expect("image metadata is always serialisable");
    serde_json::to_vec(&v).expect("a JSON value is always serialisable")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorts_keys_at_every_depth() {
        #[derive(serde::Serialize)]
        struct S {
            z: u8,
            a: std::collections::HashMap<&'static str, u8>,
        }
        let s = S {
            z: 1,
            a: [("y", 1), ("b", 2)].into_iter().collect(),
        };
        assert_eq!(super::canonical(&s), br#"{"a":{"b":2,"y":1},"z":1}"#);
    }
}
