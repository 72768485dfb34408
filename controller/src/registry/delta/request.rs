//! The delta endpoint's side: `HEAD|GET /v2/<repo>/coracle/deltas/<target diff_id>?have=…`.
//! Picks the best base among the layers the device holds (`choose_base`), takes the pair's
//! verdict from the gate (usually encoded ahead by the background workers, else encoded off
//! the async runtime, once however many ask), waiting at most `[deltas] request_wait_s` for
//! an encode in progress. `None` — no base fits, no delta pays, or the encode outlasted the
//! wait — makes the route answer 404, and the agent pulls the full layer.

use coracle_images::Digest;

use super::catalogue::choose_base;
use super::{DeltaOutcome, Deltas, RegistryError};

/// More held layers than any device stores; longer lists are refused, not truncated.
pub const MAX_HAVE: usize = 256;

/// Parses the `have` query parameter: comma-separated `sha256:` digests, at most `MAX_HAVE`.
pub fn parse_have(query: Option<&str>) -> Result<Vec<Digest>, RegistryError> {
    let invalid = |reason: String| RegistryError::DeltaRequestInvalid { reason };
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("have="))
        .ok_or_else(|| invalid("missing have=<diff_id>,... parameter".into()))?;
    let raw = raw
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2C", ",");
    let items: Vec<&str> = raw.split(',').filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(invalid("have lists no layers".into()));
    }
    if items.len() > MAX_HAVE {
        return Err(invalid(format!(
            "have lists {} layers, at most {MAX_HAVE} are accepted",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            item.parse::<Digest>()
                .map_err(|_| invalid(format!("have entry {item:?} is not a sha256 digest")))
        })
        .collect()
}

impl Deltas {
    /// The delta blob (digest, size) that rebuilds `target` in `repository` from a layer in
    /// `have`, encoding it on first request; `None` when the device should pull the layer.
    pub async fn for_request(
        &self,
        repository: &str,
        target: &Digest,
        have: Vec<Digest>,
    ) -> Result<Option<(Digest, u64)>, RegistryError> {
        let deltas = self.clone();
        let repository = repository.to_string();
        let target = *target;
        tokio::task::spawn_blocking(move || {
            deltas.for_request_blocking(&repository, &target, &have)
        })
        .await
        .map_err(|err| RegistryError::delta("delta task", err))?
    }

    fn for_request_blocking(
        &self,
        repository: &str,
        target: &Digest,
        have: &[Digest],
    ) -> Result<Option<(Digest, u64)>, RegistryError> {
        let images = self.catalogue(repository)?;
        let Some((target_layer, base_layer)) = choose_base(&images, target, have) else {
            if images.iter().flatten().any(|l| &l.diff_id == target) {
                return Ok(None);
            }
            return Err(RegistryError::DeltaRequestInvalid {
                reason: format!("{target} is not a layer of repository {repository}"),
            });
        };
        match self.delta_within(&target_layer, &base_layer, self.wait)? {
            Some(DeltaOutcome::Delta { digest, bytes }) => Ok(Some((digest, bytes))),
            // No delta pays, or the encode outlasted the wait: the full layer.
            Some(DeltaOutcome::NotWorth { .. }) | None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn have_lists_are_checked() {
        let ok = parse_have(Some(&format!("have={A},{B}"))).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(parse_have(None).is_err());
        assert!(parse_have(Some("have=")).is_err());
        assert!(parse_have(Some("have=sha256:zz")).is_err());
        let huge = vec![A; MAX_HAVE + 1].join(",");
        assert!(parse_have(Some(&format!("have={huge}"))).is_err());
    }
}
