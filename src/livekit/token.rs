//! Access tokens for the censor's two participants. The layout that keeps
//! raw video away from viewers (no per-track grant exists in LiveKit): in
//! `X-raw` the censor is a hidden subscribe-only participant; in `X` it is a
//! visible publish-only one (hidden participants are never announced, so a
//! hidden publisher's track would be invisible).

use crate::error::LiveKitError;
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol::{RoomAgentDispatch, RoomConfiguration};
use std::time::Duration;

/// Suffix of the room the broadcaster publishes into.
pub const RAW_SUFFIX: &str = "-raw";

/// Tokens live long enough for a long broadcast; the server does not drop a
/// connected participant when its token expires.
const TTL: Duration = Duration::from_secs(6 * 3600);

/// Subscribe-only, hidden grants in `room`: what the censor's input needs.
fn hidden_subscriber(room: &str) -> VideoGrants {
    VideoGrants {
        room_join: true,
        room: room.to_string(),
        can_publish: Some(false),
        can_subscribe: Some(true),
        can_publish_data: Some(false),
        hidden: true,
        ..Default::default()
    }
}

/// The hidden subscriber in `room` (the raw room).
pub fn subscriber_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, LiveKitError> {
    mint(key, secret, identity, hidden_subscriber(room))
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

/// A job's hidden subscriber in `room` when it reconnects: the grants the
/// server gives the job's own token (agent, hidden, subscribe only), so the
/// room still counts it as a dependent participant that keeps no room open.
pub fn job_subscriber_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, LiveKitError> {
    let t = builder(key, secret, identity)?
        .with_kind("agent")
        .with_grants(VideoGrants {
            agent: true,
            ..hidden_subscriber(room)
        });
    t.to_jwt().map_err(|e| LiveKitError::Token(e.to_string()))
}

/// A worker's registration at `/agent`: the `agent` grant and nothing else
/// (it joins no room with it).
pub fn worker_token(key: &str, secret: &str) -> Result<String, LiveKitError> {
    mint(
        key,
        secret,
        "livecensor-worker",
        VideoGrants {
            agent: true,
            ..Default::default()
        },
    )
}

/// A broadcaster's token for `room`'s raw room: publish only, and the room
/// it creates carries a dispatch of `agent_name`, so the server hands one
/// worker a job for it (none without a worker registered under that name).
pub fn broadcaster_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
    agent_name: Option<&str>,
    ttl: Duration,
) -> Result<String, LiveKitError> {
    let mut t = builder(key, secret, identity)?
        .with_ttl(ttl)
        .with_grants(VideoGrants {
            room_join: true,
            room: format!("{room}{RAW_SUFFIX}"),
            can_publish: Some(true),
            can_subscribe: Some(false),
            can_publish_data: Some(false),
            ..Default::default()
        });
    if let Some(name) = agent_name {
        t = t.with_room_config(RoomConfiguration {
            agents: vec![RoomAgentDispatch {
                agent_name: name.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    t.to_jwt().map_err(|e| LiveKitError::Token(e.to_string()))
}

fn builder(key: &str, secret: &str, identity: &str) -> Result<AccessToken, LiveKitError> {
    if key.is_empty() || secret.is_empty() {
        return Err(LiveKitError::Token(
            "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set".into(),
        ));
    }
    Ok(AccessToken::with_api_key(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_ttl(TTL))
}

fn mint(
    key: &str,
    secret: &str,
    identity: &str,
    grants: VideoGrants,
) -> Result<String, LiveKitError> {
    builder(key, secret, identity)?
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

    #[test]
    fn worker_and_job_tokens_are_least_privilege() {
        let v = TokenVerifier::with_api_key("k", "s");
        let c = v.verify(&worker_token("k", "s").unwrap()).unwrap();
        assert!(c.video.agent && !c.video.room_join && c.video.room.is_empty());
        let c = v
            .verify(&job_subscriber_token("k", "s", "a-raw", "livecensor-in-x").unwrap())
            .unwrap();
        assert!(c.video.agent && c.video.hidden && !c.video.can_publish());
        assert_eq!(
            (c.kind.as_str(), c.sub.as_str()),
            ("agent", "livecensor-in-x")
        );
    }

    #[test]
    fn broadcaster_token_dispatches_the_agent_to_the_raw_room() {
        let v = TokenVerifier::with_api_key("k", "s");
        let t = broadcaster_token("k", "s", "a", "bc", Some("livecensor"), TTL).unwrap();
        let c = v.verify(&t).unwrap();
        assert_eq!(c.video.room, "a-raw");
        assert!(c.video.can_publish() && !c.video.can_subscribe());
        let agents = c.room_config.expect("room config").agents;
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].agent_name, "livecensor");
        let t = broadcaster_token("k", "s", "a", "bc", None, TTL).unwrap();
        assert!(v.verify(&t).unwrap().room_config.is_none());
    }
}
