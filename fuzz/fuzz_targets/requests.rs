//! A client's request body, whatever it is: parsed as OpenAI's and Anthropic's request and translated to
//! every provider's format. Refusals are fine; a panic, a hang or a runaway allocation is not.
#![no_main]

use leanlm_wire::anthropic::{self, MessagesRequest};
use leanlm_wire::gemini;
use leanlm_wire::openai::ChatRequest;
use libfuzzer_sys::fuzz_target;

fn translate_openai(req: ChatRequest) {
    let _ = anthropic::from_openai(req.clone());
    let _ = gemini::from_openai(req.clone());
    let _ = serde_json::to_vec(&req);
}

fuzz_target!(|body: &[u8]| {
    if let Ok(req) = ChatRequest::parse(body) {
        translate_openai(req);
    }
    if let Ok(req) = MessagesRequest::parse(body)
        && let Ok(hub) = req.into_openai()
        && let Ok(bytes) = serde_json::to_vec(&hub)
        && let Ok(req) = ChatRequest::parse(&bytes)
    {
        translate_openai(req);
    }
});
