//! Errors in the client's own wire format.

use serde_json::{Value, json};

use crate::ClientFormat;

/// The class of an error, mapped onto each wire format's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    /// The upstream failed or answered something unusable.
    Upstream,
    Overloaded,
    Timeout,
}

impl ErrorKind {
    /// The kind an upstream HTTP status maps to.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            503 | 529 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout,
            _ => ErrorKind::Upstream,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Upstream | ErrorKind::Overloaded | ErrorKind::Timeout => "api_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Upstream => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }
}

/// A request the gateway cannot serve as given, with a message meant for the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    /// An OpenAI-style machine code such as `model_not_found`.
    pub code: Option<&'static str>,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            code: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The error body in the given client format.
    pub fn to_body(&self, format: ClientFormat) -> Value {
        match format {
            ClientFormat::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.kind.openai_type(),
                    "param": null,
                    "code": self.code,
                }
            }),
            ClientFormat::Anthropic => json!({
                "type": "error",
                "error": { "type": self.kind.anthropic_type(), "message": self.message }
            }),
        }
    }
}

/// Pulls the human message out of any provider's error body (OpenAI, Anthropic or Gemini shapes).
pub fn upstream_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    match err {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_follow_each_format() {
        let e = WireError::new(ErrorKind::NotFound, "no such model").with_code("model_not_found");
        let o = e.to_body(ClientFormat::OpenAi);
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["code"], "model_not_found");
        let a = e.to_body(ClientFormat::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
        assert_eq!(a["error"]["message"], "no such model");
    }

    #[test]
    fn upstream_messages_are_found_in_every_shape() {
        let openai = br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#;
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let gemini = br#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(upstream_error_message(openai).as_deref(), Some("bad key"));
        assert_eq!(upstream_error_message(anthropic).as_deref(), Some("Overloaded"));
        assert_eq!(upstream_error_message(gemini).as_deref(), Some("API key not valid"));
        assert_eq!(upstream_error_message(b"<html>502</html>"), None);
    }
}
