//! An upstream's answer, whatever it is: translated back to each client format. A provider (or a proxy in
//! front of it) that answers garbage must get an error, never a panic.
#![no_main]

use leanlm_wire::{anthropic, gemini};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let o = gemini::response_to_openai(&v, "g");
    let _ = anthropic::response_from_openai(&o);
    let _ = anthropic::response_to_openai(&v);
    let _ = gemini::blocked_reason(&v);
    let _ = leanlm_wire::output_text(&o);
    let _ = leanlm_wire::output_text(&v);
});
