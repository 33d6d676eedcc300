//! What kind of work a task is. Profiling decides it; scorers and candidates follow from it.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    Classify,
    Extract,
    Summarize,
    Generate,
    Chat,
    Code,
    Embed,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Classify => "classify",
            TaskType::Extract => "extract",
            TaskType::Summarize => "summarize",
            TaskType::Generate => "generate",
            TaskType::Chat => "chat",
            TaskType::Code => "code",
            TaskType::Embed => "embed",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
