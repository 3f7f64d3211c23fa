//! Room actions through LiveKit's RoomService: mute the broadcaster's
//! published track, remove the broadcaster, delete the rooms. A trait, so
//! the session can be tested (and run) without a server.

use super::event::Event;
use super::session::ActionRequest;
use super::Action;
use crate::error::ModerationError;
use crate::livekit::raw_room;
use livekit_api::services::room::RoomClient;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// What a `RoomActions` call returns; boxed so the trait is object-safe
/// (`Arc<dyn RoomActions>` in the server's state).
pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ModerationError>> + Send + 'a>>;

/// The LiveKit calls rules and moderators can make.
pub trait RoomActions: Send + Sync {
    /// Mutes `track_sid` of `identity` in `room`.
    fn mute<'a>(&'a self, room: &'a str, identity: &'a str, track_sid: &'a str)
        -> ActionFuture<'a>;
    /// Removes `identity` from `room`.
    fn remove<'a>(&'a self, room: &'a str, identity: &'a str) -> ActionFuture<'a>;
    /// Deletes every room in `rooms` (all are tried; the first error is
    /// returned).
    fn end_room<'a>(&'a self, rooms: &'a [String]) -> ActionFuture<'a>;
}

/// `RoomActions` over the `livekit-api` crate's `RoomClient`.
#[derive(Debug)]
pub struct LiveKitRoomActions {
    client: RoomClient,
}

/// A RoomService call that takes longer is reported as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl LiveKitRoomActions {
    /// `url` as in `LIVEKIT_URL` (`ws://` and `wss://` are accepted).
    pub fn new(url: &str, api_key: &str, api_secret: &str) -> Result<Self, ModerationError> {
        if api_key.is_empty() || api_secret.is_empty() {
            return Err(ModerationError::Action {
                action: "room actions",
                room: String::new(),
                reason: "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set".into(),
            });
        }
        let client = RoomClient::with_api_key(url, api_key, api_secret)
            .with_failover(false)
            .with_request_timeout(CALL_TIMEOUT);
        Ok(LiveKitRoomActions { client })
    }
}

fn failed(action: &'static str, room: &str, e: impl std::fmt::Display) -> ModerationError {
    ModerationError::Action {
        action,
        room: room.to_string(),
        reason: e.to_string(),
    }
}

impl RoomActions for LiveKitRoomActions {
    fn mute<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
        track_sid: &'a str,
    ) -> ActionFuture<'a> {
        Box::pin(async move {
            self.client
                .mute_published_track(room, identity, track_sid, true)
                .await
                .map(|_| ())
                .map_err(|e| failed("mute", room, e))
        })
    }

    fn remove<'a>(&'a self, room: &'a str, identity: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            self.client
                .remove_participant(room, identity)
                .await
                .map_err(|e| failed("remove", room, e))
        })
    }

    fn end_room<'a>(&'a self, rooms: &'a [String]) -> ActionFuture<'a> {
        Box::pin(async move {
            let mut first = None;
            for room in rooms {
                if let Err(e) = self.client.delete_room(room).await {
                    first.get_or_insert(failed("end_room", room, e));
                }
            }
            first.map_or(Ok(()), Err)
        })
    }
}

/// Makes a request's room call (the source's `room` is the viewers' room;
/// the broadcaster is in its raw room) and returns the `action_taken`
/// event, failed or not.
pub async fn perform(actions: &dyn RoomActions, req: &ActionRequest) -> Event {
    let result = call(actions, req).await.map_err(|e| e.to_string());
    if let Err(e) = &result {
        tracing::warn!(action = req.action.name(), by = %req.by, error = %e, "room action failed");
    }
    req.taken(SystemTime::now(), result)
}

/// A room call whose client panics (livekit-api's `mute_published_track`
/// unwraps the response's track) fails like any other call instead of
/// losing its `action_taken` event with the task.
async fn call(actions: &dyn RoomActions, req: &ActionRequest) -> Result<(), ModerationError> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(room_call(actions, req))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_) => Err(ModerationError::Action {
            action: req.action.name(),
            room: req.source.room.clone().unwrap_or_default(),
            reason: "the LiveKit client panicked on the server's answer".into(),
        }),
    }
}

async fn room_call(actions: &dyn RoomActions, req: &ActionRequest) -> Result<(), ModerationError> {
    let name = req.action.name();
    let missing = |what: &str| ModerationError::Action {
        action: name,
        room: req.source.room.clone().unwrap_or_default(),
        reason: format!("the event source has no {what}"),
    };
    let room = req.source.room.as_deref().ok_or_else(|| missing("room"))?;
    let raw = raw_room(room);
    match req.action {
        Action::Mute => {
            let who = req
                .source
                .participant
                .as_deref()
                .ok_or_else(|| missing("participant"))?;
            let track = req
                .source
                .track_sid
                .as_deref()
                .ok_or_else(|| missing("track sid"))?;
            actions.mute(&raw, who, track).await
        }
        Action::Remove => {
            let who = req
                .source
                .participant
                .as_deref()
                .ok_or_else(|| missing("participant"))?;
            actions.remove(&raw, who).await
        }
        Action::EndRoom => actions.end_room(&[room.to_string(), raw]).await,
        // Not room calls: the session applied them itself.
        Action::Notify | Action::CensorWhole { .. } | Action::Resume => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::event::{EventBody, Source};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        fail: bool,
    }

    impl Fake {
        fn done(&self, call: String, room: &str) -> Result<(), ModerationError> {
            self.calls.lock().unwrap().push(call);
            if self.fail {
                Err(failed("x", room, "server said no"))
            } else {
                Ok(())
            }
        }
    }

    impl RoomActions for Fake {
        fn mute<'a>(&'a self, room: &'a str, id: &'a str, sid: &'a str) -> ActionFuture<'a> {
            Box::pin(async move { self.done(format!("mute {room} {id} {sid}"), room) })
        }
        fn remove<'a>(&'a self, room: &'a str, id: &'a str) -> ActionFuture<'a> {
            Box::pin(async move { self.done(format!("remove {room} {id}"), room) })
        }
        fn end_room<'a>(&'a self, rooms: &'a [String]) -> ActionFuture<'a> {
            Box::pin(async move { self.done(format!("end {}", rooms.join(" ")), "") })
        }
    }

    fn req(action: Action, source: Source) -> ActionRequest {
        ActionRequest {
            action,
            by: "rule:r".into(),
            source,
            stream_time: Some(1.0),
        }
    }

    #[tokio::test]
    async fn requests_go_to_the_raw_room_and_become_events() {
        let fake = Fake::default();
        let src = Source::live("demo", "alice", "TR_v");
        for a in [Action::Mute, Action::Remove, Action::EndRoom] {
            let ev = perform(&fake, &req(a, src.clone())).await;
            let EventBody::ActionTaken { action, ok, by, .. } = &ev.body else {
                panic!("{ev:?}")
            };
            assert!(*ok);
            assert_eq!((action.as_str(), by.as_str()), (a.name(), "rule:r"));
        }
        assert_eq!(
            *fake.calls.lock().unwrap(),
            [
                "mute demo-raw alice TR_v",
                "remove demo-raw alice",
                "end demo demo-raw"
            ]
        );
        let ev = perform(&fake, &req(Action::Mute, Source::default())).await;
        let EventBody::ActionTaken { ok, error, .. } = &ev.body else {
            panic!()
        };
        assert!(!ok);
        assert!(error.as_deref().unwrap().contains("no room"));
        let failing = Fake {
            fail: true,
            ..Fake::default()
        };
        let ev = perform(&failing, &req(Action::Remove, src)).await;
        assert!(ev.to_json().contains("server said no"));
    }

    /// A stand-in RoomService: records each Twirp call's path, request and
    /// whether it carried a bearer token, and answers an empty message
    /// (MutePublishedTrack gets a track, which the client requires).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn livekit_client_speaks_twirp() {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Uri};
        use livekit_protocol as proto;
        use prost::Message;

        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |uri: Uri, h: HeaderMap, body: Bytes| {
            let s = Arc::clone(&s);
            async move {
                let auth = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Bearer "));
                let path = uri.path().to_string();
                let what = match path.rsplit('/').next().unwrap_or("") {
                    "MutePublishedTrack" => {
                        let r = proto::MuteRoomTrackRequest::decode(body).unwrap();
                        format!("mute {} {} {} {}", r.room, r.identity, r.track_sid, r.muted)
                    }
                    "RemoveParticipant" => {
                        let r = proto::RoomParticipantIdentity::decode(body).unwrap();
                        format!("remove {} {}", r.room, r.identity)
                    }
                    "DeleteRoom" => {
                        let r = proto::DeleteRoomRequest::decode(body).unwrap();
                        format!("delete {}", r.room)
                    }
                    other => format!("unexpected {other}"),
                };
                // A room named "notrack" gets an answer without the track.
                let track = (!what.contains("notrack")).then(proto::TrackInfo::default);
                s.lock().unwrap().push(format!("{path} auth={auth} {what}"));
                let reply = proto::MuteRoomTrackResponse { track };
                (
                    [("content-type", "application/protobuf")],
                    reply.encode_to_vec(),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let lk = LiveKitRoomActions::new(&url, "key", "secret").unwrap();
        lk.mute("demo-raw", "alice", "TR_v").await.unwrap();
        lk.remove("demo-raw", "alice").await.unwrap();
        lk.end_room(&["demo".into(), "demo-raw".into()])
            .await
            .unwrap();
        let p = "/twirp/livekit.RoomService";
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("{p}/MutePublishedTrack auth=true mute demo-raw alice TR_v true"),
                format!("{p}/RemoveParticipant auth=true remove demo-raw alice"),
                format!("{p}/DeleteRoom auth=true delete demo"),
                format!("{p}/DeleteRoom auth=true delete demo-raw"),
            ]
        );
        assert!(LiveKitRoomActions::new(&url, "", "").is_err());
        // The client unwraps a missing track: a failed action, not a lost one.
        let ev = perform(
            &lk,
            &req(Action::Mute, Source::live("notrack", "alice", "TR_v")),
        )
        .await;
        let EventBody::ActionTaken { ok, error, .. } = &ev.body else {
            panic!("{ev:?}")
        };
        assert!(!ok);
        assert!(error.as_deref().unwrap().contains("panicked"), "{error:?}");
    }
}
