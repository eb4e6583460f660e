//! How a job that ended ends the command that waited for it (`submit
//! --wait`, `watch`): exit code 0 when it completed, 1 when it failed, 2
//! when it was cancelled, and the line that says so on stderr.

use serde_json::Value;

/// Exit code for a failed job (and for any other error of the CLI).
pub const FAILED: i32 = 1;
/// Exit code for a cancelled job.
pub const CANCELLED: i32 = 2;

/// The exit code for `job` (the status API's JSON) and, unless it
/// completed, the line to print on stderr.
pub fn ending(job: &Value) -> (i32, Option<String>) {
    let id = job["id"].as_str().unwrap_or("?");
    let error = job["error"].as_str().unwrap_or("no error recorded");
    match job["status"].as_str() {
        Some("completed") => (0, None),
        Some("cancelled") => (CANCELLED, Some(format!("job {id} was cancelled"))),
        Some("failed") => (FAILED, Some(format!("job {id} failed: {error}"))),
        other => (
            FAILED,
            Some(format!(
                "job {id} ended as {}",
                other.unwrap_or("an unknown status")
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        let job = |status: &str| json!({ "id": "J", "status": status, "error": "boom" });
        assert_eq!(ending(&job("completed")), (0, None));
        assert_eq!(
            ending(&job("failed")),
            (1, Some("job J failed: boom".to_owned()))
        );
        assert_eq!(
            ending(&job("cancelled")),
            (2, Some("job J was cancelled".to_owned()))
        );
        assert_eq!(
            ending(&json!({ "id": "J" })),
            (1, Some("job J ended as an unknown status".to_owned()))
        );
    }
}
