//! Fields that are a string or a list (`content`, `system`, `stop`), read in one pass.
//!
//! `#[serde(untagged)]` reads such a field by first copying the whole value into a buffer, then trying each
//! variant against it: every message's text was copied twice on every request. These read the string or the
//! list straight from the parser, and a bad value's error says what was expected.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Deserializes a string as `text(s)` and an array of `T` as `list(items)`.
pub(crate) fn deserialize<'de, D, T, S>(
    d: D,
    expecting: &'static str,
    text: fn(String) -> S,
    list: fn(Vec<T>) -> S,
) -> Result<S, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OneOrMany<T, S> {
        expecting: &'static str,
        text: fn(String) -> S,
        list: fn(Vec<T>) -> S,
    }

    impl<'de, T: Deserialize<'de>, S> Visitor<'de> for OneOrMany<T, S> {
        type Value = S;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<S, E> {
            Ok((self.text)(s.to_owned()))
        }

        fn visit_string<E: de::Error>(self, s: String) -> Result<S, E> {
            Ok((self.text)(s))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S, A::Error> {
            Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(self.list)
        }
    }

    d.deserialize_any(OneOrMany { expecting, text, list })
}

#[cfg(test)]
mod tests {
    use crate::anthropic::{Blocks, MessagesRequest};
    use crate::openai::{ChatRequest, Content, Stop};

    #[test]
    fn a_string_or_a_list_is_read_and_anything_else_is_named() {
        let c: Content = serde_json::from_str(r#""hi \"there\"""#).unwrap();
        assert!(matches!(c, Content::Text(s) if s == "hi \"there\""));
        let c: Content = serde_json::from_str(r#"[{"type": "text", "text": "a"}, {"type": "image_url"}]"#).unwrap();
        assert!(matches!(&c, Content::Parts(p) if p.len() == 2));
        assert_eq!(c.text(), "a");
        let s: Stop = serde_json::from_str(r#"["x", "y"]"#).unwrap();
        assert_eq!(s.into_vec(), ["x", "y"]);
        let b: Blocks = serde_json::from_str(r#""system text""#).unwrap();
        assert_eq!(b.text(), "system text");

        let e = ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#).unwrap_err();
        assert!(
            e.message.contains("messages[0].content") && e.message.contains("a string or an array of content parts"),
            "{}",
            e.message
        );
        let e = ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}"#)
            .unwrap_err();
        assert!(e.message.contains("stop"), "{}", e.message);
        let e = MessagesRequest::parse(br#"{"model": "m", "max_tokens": 5, "system": {"a": 1}, "messages": []}"#)
            .unwrap_err();
        assert!(
            e.message.contains("system") && e.message.contains("a string or an array of content blocks"),
            "{}",
            e.message
        );
        // `null` is no content, as before.
        let r = ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "assistant", "content": null}]}"#).unwrap();
        assert!(r.messages[0].content.is_none());
    }
}
