//! Media in message content (images, documents, audio) as the OpenAI hub carries it, read once for every
//! translation that needs it.

use serde_json::Value;

use crate::WireError;

/// Splits `data:image/png;base64,AAAA` into its media type and base64 data.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// The error for message content a provider cannot take, naming the part: `messages[i].content[j]`.
pub(crate) fn untranslatable(message: usize, part: usize, why: impl std::fmt::Display) -> WireError {
    WireError::invalid(format!("invalid field `messages[{message}].content[{part}]`: {why}"))
}

/// A file sent inline in an OpenAI `file` content part.
pub(crate) struct InlineFile<'a> {
    pub media_type: &'a str,
    /// Base64, as the part carried it.
    pub data: &'a str,
    pub filename: Option<&'a str>,
}

/// Reads an OpenAI `{"type": "file", "file": {...}}` part. A file stored at OpenAI (`file_id`) has no
/// bytes here to send anywhere else; that, and a shape that is not a file, is an error saying so.
pub(crate) fn openai_file(part: &Value) -> Result<InlineFile<'_>, String> {
    let file = part.get("file").ok_or("a `file` part needs `file`")?;
    let filename = file.get("filename").and_then(Value::as_str);
    if let Some(data) = file.get("file_data").and_then(Value::as_str) {
        if let Some((media_type, data)) = parse_data_url(data) {
            return Ok(InlineFile {
                media_type,
                data,
                filename,
            });
        }
        // Bare base64 is what OpenAI takes for PDFs.
        if filename.is_some_and(|f| f.to_ascii_lowercase().ends_with(".pdf")) {
            return Ok(InlineFile {
                media_type: "application/pdf",
                data,
                filename,
            });
        }
        return Err("`file.file_data` must be a `data:<media type>;base64,...` URL".into());
    }
    if file.get("file_id").is_some() {
        return Err("`file.file_id` names a file stored at OpenAI, which no other provider can read; send the file inline as `file_data`".into());
    }
    Err("a `file` part needs `file.file_data`".into())
}

/// The audio format of an OpenAI `input_audio` part as a media type, with its base64 data.
pub(crate) fn openai_audio(part: &Value) -> Result<(String, &str), String> {
    let audio = part
        .get("input_audio")
        .ok_or("an `input_audio` part needs `input_audio`")?;
    let data = audio
        .get("data")
        .and_then(Value::as_str)
        .ok_or("`input_audio.data` must be a base64 string")?;
    let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
    Ok((format!("audio/{format}"), data))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn files_are_read_inline_or_refused_with_the_reason() {
        let f = json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}});
        let f = openai_file(&f).unwrap();
        assert_eq!(
            (f.media_type, f.data, f.filename),
            ("application/pdf", "JVBE", Some("a.pdf"))
        );
        let bare = json!({"type": "file", "file": {"file_data": "JVBE", "filename": "A.PDF"}});
        assert_eq!(openai_file(&bare).unwrap().media_type, "application/pdf");
        let stored = json!({"type": "file", "file": {"file_id": "file-1"}});
        assert!(openai_file(&stored).err().unwrap().contains("file_id"));
        let odd = json!({"type": "file", "file": {"file_data": "xyz", "filename": "a.bin"}});
        assert!(openai_file(&odd).err().unwrap().contains("data:"));
        assert!(openai_file(&json!({"type": "file"})).is_err());
        let a = json!({"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}});
        assert_eq!(openai_audio(&a).unwrap(), ("audio/mp3".to_owned(), "UklG"));
        assert!(openai_audio(&json!({"type": "input_audio", "input_audio": {}})).is_err());
    }
}
