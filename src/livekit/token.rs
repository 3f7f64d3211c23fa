//! Access tokens for the censor's two participants. The layout that keeps
//! raw video away from viewers (no per-track grant exists in LiveKit): in
//! `X-raw` the censor is a hidden subscribe-only participant; in `X` it is a
//! visible publish-only one (hidden participants are never announced, so a
//! hidden publisher's track would be invisible).

use crate::error::LiveKitError;
use livekit_api::access_token::{AccessToken, VideoGrants};
use std::time::Duration;

/// Suffix of the room the broadcaster publishes into.
pub const RAW_SUFFIX: &str = "-raw";

/// Tokens live long enough for a long broadcast; the server does not drop a
/// connected participant when its token expires.
const TTL: Duration = Duration::from_secs(6 * 3600);

/// The hidden subscriber in `room` (the raw room).
pub fn subscriber_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, LiveKitError> {
    mint(
        key,
        secret,
        identity,
        VideoGrants {
            room_join: true,
            room: room.to_string(),
            can_publish: Some(false),
            can_subscribe: Some(true),
            can_publish_data: Some(false),
            hidden: true,
            ..Default::default()
        },
    )
}

/// The visible publisher in `room` (the viewers' room).
pub fn publisher_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, LiveKitError> {
    mint(
        key,
        secret,
        identity,
        VideoGrants {
            room_join: true,
            room: room.to_string(),
            can_publish: Some(true),
            can_subscribe: Some(false),
            can_publish_data: Some(false),
            ..Default::default()
        },
    )
}

fn mint(
    key: &str,
    secret: &str,
    identity: &str,
    grants: VideoGrants,
) -> Result<String, LiveKitError> {
    if key.is_empty() || secret.is_empty() {
        return Err(LiveKitError::Token(
            "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set".into(),
        ));
    }
    AccessToken::with_api_key(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_ttl(TTL)
        .with_grants(grants)
        .to_jwt()
        .map_err(|e| LiveKitError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::TokenVerifier;

    #[test]
    fn grants_match_the_two_room_layout() {
        let t = subscriber_token("k", "s", "demo-raw", "censor").unwrap();
        let c = TokenVerifier::with_api_key("k", "s").verify(&t).unwrap();
        assert!(c.video.hidden && c.video.can_subscribe() && !c.video.can_publish());
        assert_eq!(c.video.room, "demo-raw");
        let t = publisher_token("k", "s", "demo", "censor").unwrap();
        let c = TokenVerifier::with_api_key("k", "s").verify(&t).unwrap();
        assert!(!c.video.hidden && !c.video.can_subscribe() && c.video.can_publish());
        assert!(subscriber_token("", "s", "r", "i").is_err());
    }
}
