//! Judging a cascade's cheap answer, the one way the request path and shadow checks both use: the
//! request's transcript is embedded (the shared embedder, off the async workers) into the prompt features
//! the cascade was trained on, and the stored cascade decides.

use leanlm_core::StageOutcome;
use leanlm_route::cascade::{Decision, Evidence, TaskCascade};
use serde_json::Value;

use crate::server::AppState;

/// The cascade's decision on a cheap answer to `request`; `Err` when the prompt cannot be embedded (the
/// call then escalates: an answer that cannot be judged is not served). `prompt` keeps the prompt's
/// features between the stages of a chain, so a call is embedded once.
pub(crate) async fn judge(
    app: &AppState,
    cascade: &TaskCascade,
    request: Option<&Value>,
    prompt: &mut Option<Vec<f32>>,
    answer: &str,
    logprobs: Option<&[f64]>,
    second: Option<&str>,
) -> Result<Decision, String> {
    // Hard checks first: an unusable answer needs no embedding to be turned down.
    if let Some(h) = cascade.setup.hard_failure(answer) {
        return Ok(Decision::Unusable(h));
    }
    let features = match prompt {
        Some(f) => f,
        None => {
            let embedder = app.embedder.as_ref().ok_or("this gateway has no embedder")?;
            let text = leanlm_core::transcript::transcript(request.ok_or("the request is not a JSON object")?);
            let mut vectors = embedder.embed(&app.routes, &app.http(), vec![text.clone()]).await?;
            let vector = vectors.pop().ok_or("the embedder returned nothing")?;
            prompt.insert(leanlm_route::features(&vector, &text))
        }
    };
    Ok(cascade.decide(&Evidence {
        prompt: features,
        answer,
        logprobs,
        second,
    }))
}

/// A decision as the call log's stage outcome, and its note.
pub(crate) fn outcome(d: &Decision) -> (StageOutcome, Option<String>) {
    match d {
        Decision::Accept { .. } => (StageOutcome::Accepted, None),
        Decision::Unsure { .. } => (StageOutcome::Escalated, None),
        Decision::Unusable(h) => (StageOutcome::Unusable, Some(h.as_str().to_owned())),
    }
}
