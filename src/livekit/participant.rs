//! One LiveKit participant without libwebrtc, sans-IO: signalling messages
//! (protobuf), two str0m peer connections (the SFU offers on the subscriber
//! one, we offer on the publisher one), and the room state we need:
//! which remote video track to subscribe to, and our own published track.
//!
//! The IO layer (`super::io`) feeds WebSocket messages, UDP datagrams and
//! timeouts in, and sends what [`Participant::poll_output`] hands out. Tests
//! can drive it with scripted server messages and no sockets.

use super::signal::{self, Keepalive};
use super::timing::Throttle;
use crate::error::LiveKitError;
use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Which of the two peer connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pc {
    /// We offer; carries what we publish.
    Publisher,
    /// The SFU offers; carries what we subscribe to.
    Subscriber,
}

impl Pc {
    fn name(self) -> &'static str {
        match self {
            Pc::Publisher => "publisher",
            Pc::Subscriber => "subscriber",
        }
    }
}

/// The video track we publish.
#[derive(Clone, Debug)]
pub struct PublishSpec {
    /// Client track id: the SFU matches our media to the AddTrack request by
    /// the SDP msid track id, so the same string goes into both.
    pub cid: String,
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// What a participant does in its room.
#[derive(Clone, Debug, Default)]
pub struct ParticipantConfig {
    /// Subscribe to the first remote video track (from `from_identity` if
    /// set).
    pub subscribe: bool,
    pub from_identity: Option<String>,
    pub publish: Option<PublishSpec>,
    /// Audio relay: also subscribe to the same participant's audio track,
    /// and publish an audio track (cid `<video cid>-audio`) next to ours.
    /// Audio is passed through (Opus), never inspected.
    pub audio: bool,
}

/// What happened, for the session above.
#[derive(Clone, Debug)]
pub enum ParticipantEvent {
    Joined {
        room: String,
        identity: String,
    },
    /// A remote video track we asked for.
    Subscribing {
        track_sid: String,
        identity: String,
    },
    /// The subscribed track, or its participant, went away.
    RemoteTrackGone {
        track_sid: String,
    },
    /// One H.264 access unit (Annex B) of the subscribed track. `contiguous`
    /// is false after packet loss: decoding should wait for a key frame.
    AccessUnit {
        data: Arc<[u8]>,
        rtp_time: u64,
        contiguous: bool,
        arrived: Instant,
    },
    /// Our track is published (SID known) and the transport is up.
    Published {
        track_sid: String,
    },
    /// One Opus packet of the subscribed audio track.
    AudioPacket {
        data: Arc<[u8]>,
        rtp_time: u64,
        arrived: Instant,
    },
    /// Our publisher transport is connected: media written now is sent.
    PublisherConnected,
    /// The SFU wants a key frame of our track (a viewer joined or lost packets).
    KeyframeRequested,
    /// The publisher's answer was accepted: the `profile-level-id`
    /// `(profile_idc, constraints, level_idc)` of the H.264 payload type we
    /// send with, or why it cannot be read.
    PublishProfile(Result<(u8, u8, u8), String>),
    /// We sent a key frame request (PLI) for the subscribed track.
    KeyframeRequestSent,
    /// The server asked us to leave, or a peer connection closed.
    Left {
        reason: String,
        /// The server's `DisconnectReason` (`UnknownReason` when it was not
        /// the server's Leave): a job session ends when superseded.
        code: proto::DisconnectReason,
    },
}

/// What the IO layer must do next.
#[derive(Debug)]
pub enum ParticipantOutput {
    /// Send this binary message on the signalling WebSocket.
    Signal(Vec<u8>),
    /// Send this datagram from the socket of `pc`.
    Transmit {
        pc: Pc,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Event(ParticipantEvent),
    /// Nothing to do before this instant (or before new input).
    Timeout(Instant),
}

struct Peer {
    rtc: Rtc,
    local: SocketAddr,
    connected: bool,
}

/// Throttle for key frame requests to the broadcaster. LiveKit forwards at
/// most one PLI per published track per `pli_throttle` (1 s for mid and
/// high quality layers, 500 ms for low, by default) and silently drops the
/// rest, so a request sooner than that would be lost, not merely early: it
/// is kept and sent once the SFU takes it (after a loss the viewer sees
/// frames censored whole until the next IDR, so no later than that).
const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(1050);

pub struct Participant {
    cfg: ParticipantConfig,
    subscriber: Peer,
    publisher: Peer,
    keepalive: Keepalive,
    epoch: Instant,
    out: VecDeque<ParticipantOutput>,
    joined: bool,
    left: bool,
    /// Remote video track we subscribed to, and the mid it arrives on.
    subscribed: Option<String>,
    /// Identity whose video we take, and the audio track we took from it.
    subscribed_identity: Option<String>,
    sub_audio: Option<String>,
    sub_mid: Option<Mid>,
    keyframe_throttle: Throttle,
    want_keyframe: bool,
    /// Until a key frame of the subscribed track has arrived, keep asking
    /// (throttled): the SFU forwards nothing to a new subscriber before a
    /// key frame, so without asking we may wait for the broadcaster's next
    /// periodic one, or forever.
    keyframe_missing: bool,
    /// Our track: SID once published, mid once negotiated.
    published_sid: Option<String>,
    pub_mid: Option<Mid>,
    /// Our audio track (audio relay): published once accepted, its mid.
    audio_published: bool,
    pub_audio_mid: Option<Mid>,
    pub_pending: Option<SdpPendingOffer>,
    pub_offer_id: u32,
    /// Latest snapshot of every other participant, by participant SID.
    participants: HashMap<String, proto::ParticipantInfo>,
}

/// The H.264 `profile-level-id` we prefer to send with when the SFU
/// accepted it (str0m offers it first): baseline, level 3.1, which
/// openh264's constrained baseline fits. What was negotiated is read from
/// the answer ([`ParticipantEvent::PublishProfile`]): passthrough forwards a
/// broadcaster's own access units only when they fit that.
pub const PUBLISHED_PROFILE_LEVEL_ID: &str = "42001f";

/// The negotiated H.264 payload type to write with: the one of
/// [`PUBLISHED_PROFILE_LEVEL_ID`] with packetization mode 1, else the
/// first H.264 one.
fn h264_pt<'a>(
    mut params: impl Iterator<Item = &'a str0m::format::PayloadParams>,
) -> Option<str0m::media::Pt> {
    let want = u32::from_str_radix(PUBLISHED_PROFILE_LEVEL_ID, 16).ok();
    let h264: Vec<_> = params
        .by_ref()
        .filter(|p| p.spec().codec == Codec::H264)
        .collect();
    h264.iter()
        .find(|p| {
            p.spec().format.profile_level_id == want
                && p.spec().format.packetization_mode == Some(1)
        })
        .or(h264.first())
        .map(|p| p.pt())
}

fn audio_cid(spec: &PublishSpec) -> String {
    format!("{}-audio", spec.cid)
}

fn new_rtc(
    now: Instant,
    local: SocketAddr,
    pc: Pc,
    cert: Option<DtlsCert>,
) -> Result<Rtc, LiveKitError> {
    let mut config = RtcConfig::new()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false);
    if let Some(cert) = cert {
        config = config.set_dtls_cert(cert);
    }
    let mut rtc = config.build(now);
    let cand = Candidate::host(local, "udp").map_err(|e| LiveKitError::Rtc {
        pc: pc.name(),
        reason: format!("host candidate {local}: {e}"),
    })?;
    rtc.add_local_candidate(cand);
    Ok(rtc)
}

impl Participant {
    /// `sub_addr` / `pub_addr`: the local UDP sockets of the two peer
    /// connections (each its own socket, so demultiplexing is by socket).
    pub fn new(
        now: Instant,
        cfg: ParticipantConfig,
        sub_addr: SocketAddr,
        pub_addr: SocketAddr,
    ) -> Result<Self, LiveKitError> {
        Self::with_certs(now, cfg, sub_addr, pub_addr, [None, None])
    }

    /// As [`Participant::new`], with the subscriber's and the publisher's
    /// DTLS certificates made beforehand (`None`: generated here). The
    /// `signal` fuzz target makes them once: generating two per input took
    /// most of its time.
    pub(crate) fn with_certs(
        now: Instant,
        cfg: ParticipantConfig,
        sub_addr: SocketAddr,
        pub_addr: SocketAddr,
        [sub_cert, pub_cert]: [Option<DtlsCert>; 2],
    ) -> Result<Self, LiveKitError> {
        Ok(Participant {
            cfg,
            subscriber: Peer {
                rtc: new_rtc(now, sub_addr, Pc::Subscriber, sub_cert)?,
                local: sub_addr,
                connected: false,
            },
            publisher: Peer {
                rtc: new_rtc(now, pub_addr, Pc::Publisher, pub_cert)?,
                local: pub_addr,
                connected: false,
            },
            keepalive: Keepalive::new(now),
            epoch: now,
            out: VecDeque::new(),
            joined: false,
            left: false,
            subscribed: None,
            subscribed_identity: None,
            sub_audio: None,
            sub_mid: None,
            keyframe_throttle: Throttle::new(KEYFRAME_REQUEST_GAP),
            want_keyframe: false,
            keyframe_missing: false,
            published_sid: None,
            pub_mid: None,
            audio_published: false,
            pub_audio_mid: None,
            pub_pending: None,
            pub_offer_id: 0,
            participants: HashMap::new(),
        })
    }

    pub fn is_joined(&self) -> bool {
        self.joined
    }

    pub fn has_left(&self) -> bool {
        self.left
    }

    pub fn local_addr(&self, pc: Pc) -> SocketAddr {
        self.peer(pc).local
    }

    fn peer(&self, pc: Pc) -> &Peer {
        match pc {
            Pc::Publisher => &self.publisher,
            Pc::Subscriber => &self.subscriber,
        }
    }

    fn peer_mut(&mut self, pc: Pc) -> &mut Peer {
        match pc {
            Pc::Publisher => &mut self.publisher,
            Pc::Subscriber => &mut self.subscriber,
        }
    }

    fn send(&mut self, msg: Req) {
        self.out
            .push_back(ParticipantOutput::Signal(signal::encode(msg)));
    }

    fn event(&mut self, e: ParticipantEvent) {
        self.out.push_back(ParticipantOutput::Event(e));
    }

    /// A binary message from the signalling WebSocket.
    pub fn handle_signal(&mut self, now: Instant, bytes: &[u8]) -> Result<(), LiveKitError> {
        let msg = signal::decode(bytes)?;
        self.handle_response(now, msg)
    }

    /// One decoded server message.
    pub fn handle_response(&mut self, now: Instant, msg: Resp) -> Result<(), LiveKitError> {
        match msg {
            Resp::Join(j) => {
                self.joined = true;
                self.keepalive.start(now, j.ping_interval, j.ping_timeout);
                let room = j.room.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                let identity = j
                    .participant
                    .as_ref()
                    .map(|p| p.identity.clone())
                    .unwrap_or_default();
                tracing::info!(%room, %identity, server = %j.server_version, "joined");
                self.event(ParticipantEvent::Joined { room, identity });
                self.consider_participants(&j.other_participants);
                if let Some(spec) = self.cfg.publish.clone() {
                    self.send(Req::AddTrack(proto::AddTrackRequest {
                        cid: spec.cid.clone(),
                        name: spec.name.clone(),
                        r#type: proto::TrackType::Video as i32,
                        source: proto::TrackSource::Camera as i32,
                        width: spec.width,
                        height: spec.height,
                        ..Default::default()
                    }));
                    if self.cfg.audio {
                        self.send(Req::AddTrack(proto::AddTrackRequest {
                            cid: audio_cid(&spec),
                            name: format!("{}-audio", spec.name),
                            r#type: proto::TrackType::Audio as i32,
                            source: proto::TrackSource::Microphone as i32,
                            ..Default::default()
                        }));
                    }
                }
            }
            Resp::Offer(sd) => self.handle_subscriber_offer(sd)?,
            Resp::Answer(sd) => self.handle_publisher_answer(sd)?,
            Resp::Trickle(t) => self.handle_trickle(&t)?,
            Resp::Update(u) => self.consider_participants(&u.participants),
            Resp::TrackPublished(tp) => self.handle_track_published(tp)?,
            // About one of our own tracks (the server unpublished it).
            Resp::TrackUnpublished(tu) => {
                tracing::warn!(track = %tu.track_sid, "server unpublished our track");
            }
            Resp::Leave(l) => {
                self.left = true;
                let code = proto::DisconnectReason::try_from(l.reason)
                    .unwrap_or(proto::DisconnectReason::UnknownReason);
                self.event(ParticipantEvent::Left {
                    reason: format!("server asked to leave ({})", code.as_str_name()),
                    code,
                });
            }
            Resp::Pong(_) | Resp::PongResp(_) => self.keepalive.handle_pong(now),
            other => tracing::debug!(?other, "signal message ignored"),
        }
        Ok(())
    }

    /// Participant updates carry full snapshots: keep the latest per
    /// participant SID, then reconcile what we subscribe to against them
    /// (a broadcaster that leaves and comes back under the same identity is
    /// a new participant with a new track).
    fn consider_participants(&mut self, ps: &[proto::ParticipantInfo]) {
        for p in ps {
            if p.state == proto::participant_info::State::Disconnected as i32 {
                self.participants.remove(&p.sid);
            } else {
                self.participants.insert(p.sid.clone(), p.clone());
            }
        }
        self.reconcile();
    }

    fn reconcile(&mut self) {
        let mut known = Vec::new();
        for p in self.participants.values() {
            for t in &p.tracks {
                known.push((
                    p.identity.clone(),
                    t.sid.clone(),
                    t.r#type,
                    t.mime_type.clone(),
                ));
            }
        }
        let listed = |sid: &Option<String>| {
            sid.as_ref()
                .is_some_and(|s| known.iter().any(|(_, k, _, _)| k == s))
        };
        if self.subscribed.is_some() && !listed(&self.subscribed) {
            if let Some(sid) = self.subscribed.clone() {
                self.remote_track_gone(&sid);
            }
        }
        if self.sub_audio.is_some() && !listed(&self.sub_audio) {
            self.sub_audio = None;
        }
        if !self.cfg.subscribe {
            return;
        }
        if self.subscribed.is_none() {
            let pick = known.iter().find(|(id, _, ty, _)| {
                *ty == proto::TrackType::Video as i32
                    && self.cfg.from_identity.as_ref().is_none_or(|w| w == id)
            });
            if let Some((id, sid, _, mime)) = pick.cloned() {
                tracing::info!(track = %sid, from = %id, %mime, "subscribing");
                self.subscribed = Some(sid.clone());
                self.subscribed_identity = Some(id.clone());
                self.keyframe_missing = true;
                self.send(Req::Subscription(proto::UpdateSubscription {
                    track_sids: vec![sid.clone()],
                    subscribe: true,
                    participant_tracks: Vec::new(),
                }));
                self.event(ParticipantEvent::Subscribing {
                    track_sid: sid,
                    identity: id,
                });
            }
        }
        if self.cfg.audio && self.sub_audio.is_none() {
            let owner = self.subscribed.as_ref().and_then(|v| {
                known
                    .iter()
                    .find(|(_, k, _, _)| k == v)
                    .map(|(id, _, _, _)| id.clone())
            });
            let pick = known.iter().find(|(id, _, ty, _)| {
                *ty == proto::TrackType::Audio as i32 && Some(id) == owner.as_ref()
            });
            if let Some((id, sid, _, _)) = pick.cloned() {
                tracing::info!(track = %sid, from = %id, "subscribing (audio)");
                self.sub_audio = Some(sid.clone());
                self.send(Req::Subscription(proto::UpdateSubscription {
                    track_sids: vec![sid],
                    subscribe: true,
                    participant_tracks: Vec::new(),
                }));
            }
        }
    }

    fn remote_track_gone(&mut self, sid: &str) {
        if self.sub_audio.as_deref() == Some(sid) {
            self.sub_audio = None;
        }
        if self.subscribed.as_deref() == Some(sid) {
            self.subscribed = None;
            self.subscribed_identity = None;
            self.sub_audio = None;
            self.event(ParticipantEvent::RemoteTrackGone {
                track_sid: sid.to_string(),
            });
        }
    }

    fn handle_subscriber_offer(
        &mut self,
        sd: proto::SessionDescription,
    ) -> Result<(), LiveKitError> {
        let offer = SdpOffer::from_sdp_string(&sd.sdp).map_err(|e| LiveKitError::Rtc {
            pc: "subscriber",
            reason: format!("bad offer: {e}"),
        })?;
        let answer = self
            .subscriber
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| LiveKitError::Rtc {
                pc: "subscriber",
                reason: format!("cannot answer offer: {e}"),
            })?;
        tracing::debug!(id = sd.id, "answering subscriber offer");
        self.send(Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: sd.id,
            mid_to_track_id: Default::default(),
        }));
        Ok(())
    }

    fn handle_publisher_answer(
        &mut self,
        sd: proto::SessionDescription,
    ) -> Result<(), LiveKitError> {
        let Some(pending) = self.pub_pending.take() else {
            tracing::warn!(id = sd.id, "answer without a pending offer ignored");
            return Ok(());
        };
        let answer = SdpAnswer::from_sdp_string(&sd.sdp).map_err(|e| LiveKitError::Rtc {
            pc: "publisher",
            reason: format!("bad answer: {e}"),
        })?;
        self.publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| LiveKitError::Rtc {
                pc: "publisher",
                reason: format!("cannot accept answer: {e}"),
            })?;
        let profile = self.published_profile(&sd.sdp);
        match &profile {
            Ok((p, c, l)) => {
                tracing::info!("published H.264 negotiated as {p:02x}{c:02x}{l:02x}")
            }
            Err(why) => tracing::warn!("published H.264 profile-level-id: {why}"),
        }
        self.event(ParticipantEvent::PublishProfile(profile));
        Ok(())
    }

    /// The negotiated `profile-level-id` of the payload type
    /// [`Self::write_video`] sends with, from the answer's SDP.
    fn published_profile(&mut self, answer: &str) -> Result<(u8, u8, u8), String> {
        let mid = self.pub_mid.ok_or("no video media offered")?;
        let w = self
            .publisher
            .rtc
            .writer(mid)
            .ok_or("no writer for the video media")?;
        let pt = h264_pt(w.payload_params()).ok_or("the SFU accepted no H.264 payload type")?;
        crate::livekit::fmtp::h264_profile_level_id(answer, &mid.to_string(), *pt)
    }

    fn handle_trickle(&mut self, t: &proto::TrickleRequest) -> Result<(), LiveKitError> {
        let line = signal::parse_candidate_init(&t.candidate_init)?;
        if line.is_empty() {
            return Ok(()); // end of candidates
        }
        let pc = if t.target == proto::SignalTarget::Publisher as i32 {
            Pc::Publisher
        } else {
            Pc::Subscriber
        };
        match Candidate::from_sdp_string(&line) {
            // One UDP socket per peer connection: TCP candidates are useless.
            Ok(c) if c.proto() == Protocol::Udp => {
                tracing::debug!(pc = pc.name(), cand = %line, "remote candidate");
                self.peer_mut(pc).rtc.add_remote_candidate(c);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(cand = %line, "unparsable candidate ignored: {e}"),
        }
        Ok(())
    }

    /// Our track(s) accepted: one offer with every m-line once all are
    /// (two offers in flight would collide).
    fn handle_track_published(
        &mut self,
        tp: proto::TrackPublishedResponse,
    ) -> Result<(), LiveKitError> {
        let Some(spec) = self.cfg.publish.clone() else {
            return Ok(());
        };
        let sid = tp.track.map(|t| t.sid).unwrap_or_default();
        if tp.cid == spec.cid {
            tracing::info!(track = %sid, "video track accepted");
            self.published_sid = Some(sid);
        } else if self.cfg.audio && tp.cid == audio_cid(&spec) {
            tracing::info!(track = %sid, "audio track accepted");
            self.audio_published = true;
        } else {
            return Ok(());
        }
        let all = self.published_sid.is_some() && (!self.cfg.audio || self.audio_published);
        if !all || self.pub_mid.is_some() {
            return Ok(());
        }
        let mut api = self.publisher.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some(spec.cid.clone()),
            Some(spec.cid.clone()),
            None,
        );
        let mut mids = vec![(mid.to_string(), spec.cid.clone())];
        let audio_mid = self.cfg.audio.then(|| {
            let m = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(spec.cid.clone()),
                Some(audio_cid(&spec)),
                None,
            );
            mids.push((m.to_string(), audio_cid(&spec)));
            m
        });
        let Some((offer, pending)) = api.apply() else {
            return Err(LiveKitError::Rtc {
                pc: "publisher",
                reason: "no offer to make".into(),
            });
        };
        self.pub_mid = Some(mid);
        self.pub_audio_mid = audio_mid;
        self.pub_pending = Some(pending);
        self.pub_offer_id += 1;
        self.send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: self.pub_offer_id,
            mid_to_track_id: mids.into_iter().collect(),
        }));
        Ok(())
    }

    /// A datagram arrived on the socket of `pc`.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        pc: Pc,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), LiveKitError> {
        let destination = self.peer(pc).local;
        let Ok(contents) = data.try_into() else {
            return Ok(()); // not STUN/DTLS/RTP: ignore
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        self.peer_mut(pc)
            .rtc
            .handle_input(input)
            .map_err(|e| LiveKitError::Rtc {
                pc: pc.name(),
                reason: e.to_string(),
            })
    }

    /// Time passes: str0m timers and the ping.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), LiveKitError> {
        for pc in [Pc::Subscriber, Pc::Publisher] {
            self.peer_mut(pc)
                .rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| LiveKitError::Rtc {
                    pc: pc.name(),
                    reason: e.to_string(),
                })?;
        }
        let ms = now.saturating_duration_since(self.epoch).as_millis() as i64;
        if let Some(ping) = self.keepalive.handle_timeout(now, ms)? {
            self.send(ping);
            self.send(Req::PingReq(proto::Ping {
                timestamp: ms,
                rtt: 0,
            }));
        }
        if self.want_keyframe || (self.keyframe_missing && self.subscribed.is_some()) {
            self.request_keyframe(now);
        }
        Ok(())
    }

    /// Asks the broadcaster for a key frame (PLI), at most one per
    /// `KEYFRAME_REQUEST_GAP`; a request that is throttled or has no track
    /// yet is kept and retried.
    pub fn request_keyframe(&mut self, now: Instant) {
        self.want_keyframe = true;
        if !self.keyframe_throttle.ready(now) {
            return;
        }
        let Some(mid) = self.sub_mid else {
            return;
        };
        let Some(mut w) = self.subscriber.rtc.writer(mid) else {
            return;
        };
        match w.request_keyframe(None, KeyframeRequestKind::Pli) {
            Ok(()) => {
                tracing::debug!("key frame requested (PLI)");
                self.keyframe_throttle.mark(now);
                self.want_keyframe = false;
                self.event(ParticipantEvent::KeyframeRequestSent);
            }
            Err(e) => tracing::debug!("key frame request failed: {e}"),
        }
    }

    /// Sends one H.264 access unit (Annex B) on our track. Returns false
    /// (and drops it) while the publisher transport is not up yet.
    pub fn write_video(
        &mut self,
        now: Instant,
        rtp_time_90k: u64,
        access_unit: Vec<u8>,
    ) -> Result<bool, LiveKitError> {
        if !self.publisher.connected {
            return Ok(false);
        }
        let Some(mid) = self.pub_mid else {
            return Ok(false);
        };
        let Some(w) = self.publisher.rtc.writer(mid) else {
            return Ok(false);
        };
        let Some(pt) = h264_pt(w.payload_params()) else {
            return Err(LiveKitError::Rtc {
                pc: "publisher",
                reason: "the SFU accepted no H.264 payload type".into(),
            });
        };
        w.write(pt, now, MediaTime::from_90khz(rtp_time_90k), access_unit)
            .map_err(|e| LiveKitError::Rtc {
                pc: "publisher",
                reason: format!("write: {e}"),
            })?;
        Ok(true)
    }

    /// Relays one Opus packet on our audio track; false (dropped) while the
    /// transport or the track is not up.
    pub fn write_audio(
        &mut self,
        now: Instant,
        rtp_time_48k: u64,
        packet: Vec<u8>,
    ) -> Result<bool, LiveKitError> {
        if !self.publisher.connected {
            return Ok(false);
        }
        let Some(mid) = self.pub_audio_mid else {
            return Ok(false);
        };
        let Some(w) = self.publisher.rtc.writer(mid) else {
            return Ok(false);
        };
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return Ok(false);
        };
        w.write(
            pt,
            now,
            MediaTime::new(rtp_time_48k, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            packet,
        )
        .map_err(|e| LiveKitError::Rtc {
            pc: "publisher",
            reason: format!("write audio: {e}"),
        })?;
        Ok(true)
    }

    /// Leaves the room (the IO layer sends it, then closes).
    pub fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.send(Req::Leave(proto::LeaveRequest {
            can_reconnect: false,
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            regions: None,
        }));
    }

    /// The next thing to do. Call until it returns `Timeout`.
    pub fn poll_output(&mut self) -> Result<ParticipantOutput, LiveKitError> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Ok(o);
            }
            let mut next = self.keepalive.poll_timeout();
            let mut progressed = false;
            for pc in [Pc::Subscriber, Pc::Publisher] {
                let out = self
                    .peer_mut(pc)
                    .rtc
                    .poll_output()
                    .map_err(|e| LiveKitError::Rtc {
                        pc: pc.name(),
                        reason: e.to_string(),
                    })?;
                match out {
                    Output::Transmit(t) => {
                        return Ok(ParticipantOutput::Transmit {
                            pc,
                            destination: t.destination,
                            contents: t.contents.into(),
                        })
                    }
                    Output::Event(e) => {
                        progressed = true;
                        self.handle_rtc_event(pc, e);
                    }
                    Output::Timeout(t) => {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
            }
            if !progressed && self.out.is_empty() {
                let fallback = Instant::now() + Duration::from_millis(100);
                return Ok(ParticipantOutput::Timeout(next.unwrap_or(fallback)));
            }
        }
    }

    fn handle_rtc_event(&mut self, pc: Pc, e: Event) {
        match e {
            Event::IceConnectionStateChange(s) => {
                tracing::debug!(pc = pc.name(), state = ?s, "ICE");
                if s == IceConnectionState::Disconnected {
                    self.event(ParticipantEvent::Left {
                        reason: format!("{} ICE disconnected", pc.name()),
                        code: proto::DisconnectReason::UnknownReason,
                    });
                }
            }
            Event::Connected => {
                tracing::info!(pc = pc.name(), "transport connected");
                self.peer_mut(pc).connected = true;
                if pc == Pc::Publisher {
                    self.event(ParticipantEvent::PublisherConnected);
                    if let Some(sid) = self.published_sid.clone() {
                        self.event(ParticipantEvent::Published { track_sid: sid });
                    }
                }
            }
            Event::MediaAdded(m) if pc == Pc::Subscriber && m.kind == MediaKind::Video => {
                tracing::debug!(mid = %m.mid, "remote video media");
                self.sub_mid = Some(m.mid);
                self.want_keyframe = true;
            }
            Event::MediaData(d) => {
                if pc != Pc::Subscriber {
                    return;
                }
                if d.params.spec().codec == Codec::Opus {
                    if self.cfg.audio {
                        self.event(ParticipantEvent::AudioPacket {
                            data: d.data,
                            rtp_time: d
                                .time
                                .rebase(str0m::media::Frequency::FORTY_EIGHT_KHZ)
                                .numer(),
                            arrived: d.network_time,
                        });
                    }
                    return;
                }
                if d.params.spec().codec != Codec::H264 {
                    return;
                }
                if self.sub_mid != Some(d.mid) {
                    self.sub_mid = Some(d.mid);
                }
                if !d.contiguous {
                    self.want_keyframe = true;
                }
                if crate::codec::is_keyframe(&d.data) {
                    self.keyframe_missing = false;
                }
                self.event(ParticipantEvent::AccessUnit {
                    data: d.data,
                    rtp_time: d.time.rebase(str0m::media::Frequency::NINETY_KHZ).numer(),
                    contiguous: d.contiguous,
                    arrived: d.network_time,
                });
            }
            Event::KeyframeRequest(r) if pc == Pc::Publisher && Some(r.mid) == self.pub_mid => {
                self.event(ParticipantEvent::KeyframeRequested);
            }
            Event::StreamPaused(p) => tracing::info!(pc = pc.name(), ?p, "stream paused"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn drain(p: &mut Participant) -> (Vec<Req>, Vec<ParticipantEvent>) {
        let mut reqs = Vec::new();
        let mut evs = Vec::new();
        loop {
            match p.poll_output().unwrap() {
                ParticipantOutput::Signal(b) => reqs.push(
                    proto::SignalRequest::decode(b.as_slice())
                        .unwrap()
                        .message
                        .unwrap(),
                ),
                ParticipantOutput::Event(e) => evs.push(e),
                ParticipantOutput::Transmit { .. } => {}
                ParticipantOutput::Timeout(_) => return (reqs, evs),
            }
        }
    }

    fn join(others: Vec<proto::ParticipantInfo>) -> Resp {
        Resp::Join(proto::JoinResponse {
            room: Some(proto::Room {
                name: "demo-raw".into(),
                ..Default::default()
            }),
            participant: Some(proto::ParticipantInfo {
                identity: "me".into(),
                ..Default::default()
            }),
            other_participants: others,
            ping_interval: 5,
            ping_timeout: 15,
            ..Default::default()
        })
    }

    fn broadcaster() -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: "PA_1".into(),
            identity: "broadcaster".into(),
            state: proto::participant_info::State::Active as i32,
            is_publisher: true,
            tracks: vec![
                proto::TrackInfo {
                    sid: "TR_audio".into(),
                    r#type: proto::TrackType::Audio as i32,
                    ..Default::default()
                },
                proto::TrackInfo {
                    sid: "TR_video".into(),
                    r#type: proto::TrackType::Video as i32,
                    mime_type: "video/H264".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn subscriber_asks_for_the_video_track_and_answers_the_offer() {
        let now = Instant::now();
        let cfg = ParticipantConfig {
            subscribe: true,
            ..Default::default()
        };
        let mut p = Participant::new(now, cfg, addr(40000), addr(40001)).unwrap();
        p.handle_response(now, join(vec![broadcaster()])).unwrap();
        let (reqs, evs) = drain(&mut p);
        assert!(matches!(evs[0], ParticipantEvent::Joined { .. }));
        let subs: Vec<_> = reqs
            .iter()
            .filter_map(|r| match r {
                Req::Subscription(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].track_sids, vec!["TR_video".to_string()]);
        assert!(subs[0].subscribe);

        // A str0m peer stands in for the SFU: it offers H.264 video.
        let mut sfu = RtcConfig::new()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(now);
        sfu.add_local_candidate(Candidate::host(addr(7882), "udp").unwrap());
        let mut api = sfu.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        p.handle_response(
            now,
            Resp::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 7,
                mid_to_track_id: Default::default(),
            }),
        )
        .unwrap();
        let (reqs, _) = drain(&mut p);
        let Some(Req::Answer(a)) = reqs.into_iter().next() else {
            panic!("no answer");
        };
        assert_eq!(a.id, 7);
        assert!(a.sdp.contains("H264"));
        assert!(a.sdp.contains("127.0.0.1 40000 typ host"));
        sfu.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&a.sdp).unwrap())
            .unwrap();

        // The broadcaster leaves: the track is gone, reported once.
        let mut left = broadcaster();
        left.state = proto::participant_info::State::Disconnected as i32;
        p.handle_response(
            now,
            Resp::Update(proto::ParticipantUpdate {
                participants: vec![left],
            }),
        )
        .unwrap();
        let (reqs, evs) = drain(&mut p);
        assert!(matches!(
            &evs[..],
            [ParticipantEvent::RemoteTrackGone { .. }]
        ));
        assert!(reqs.is_empty());
        // It comes back (same identity, new participant and track): we
        // subscribe to the new track.
        let mut back = broadcaster();
        back.sid = "PA_2".into();
        back.tracks[1].sid = "TR_video2".into();
        p.handle_response(
            now,
            Resp::Update(proto::ParticipantUpdate {
                participants: vec![back],
            }),
        )
        .unwrap();
        let (reqs, _) = drain(&mut p);
        assert!(
            matches!(&reqs[..], [Req::Subscription(s)] if s.track_sids == vec!["TR_video2".to_string()])
        );
    }

    #[test]
    fn publisher_adds_track_then_offers_h264_with_the_cid_as_msid() {
        let now = Instant::now();
        let cfg = ParticipantConfig {
            publish: Some(PublishSpec {
                cid: "livecensor-video".into(),
                name: "censored".into(),
                width: 640,
                height: 360,
            }),
            ..Default::default()
        };
        let mut p = Participant::new(now, cfg, addr(40002), addr(40003)).unwrap();
        p.handle_response(now, join(vec![broadcaster()])).unwrap();
        let (reqs, _) = drain(&mut p);
        // Not a subscriber: no subscription even though a track exists.
        assert!(!reqs.iter().any(|r| matches!(r, Req::Subscription(_))));
        let Some(Req::AddTrack(add)) = reqs.iter().find(|r| matches!(r, Req::AddTrack(_))) else {
            panic!("no AddTrack");
        };
        assert_eq!(add.cid, "livecensor-video");
        assert_eq!(add.r#type, proto::TrackType::Video as i32);
        p.handle_response(
            now,
            Resp::TrackPublished(proto::TrackPublishedResponse {
                cid: "livecensor-video".into(),
                track: Some(proto::TrackInfo {
                    sid: "TR_out".into(),
                    ..Default::default()
                }),
            }),
        )
        .unwrap();
        let (reqs, _) = drain(&mut p);
        let Some(Req::Offer(o)) = reqs.into_iter().next() else {
            panic!("no offer");
        };
        assert_eq!(o.id, 1);
        assert!(o.sdp.contains("H264"));
        assert!(!o.sdp.contains("VP8"));
        assert!(o.sdp.contains("livecensor-video"));
        assert!(o.sdp.contains("127.0.0.1 40003 typ host"));
        // Before the transport is up, media is dropped, not queued.
        assert!(!p.write_video(now, 0, vec![0, 0, 0, 1, 0x65]).unwrap());
        // Keep-alive after the join interval.
        p.handle_timeout(now + Duration::from_secs(6)).unwrap();
        let (reqs, _) = drain(&mut p);
        assert!(reqs.iter().any(|r| matches!(r, Req::Ping(_))));
        p.leave();
        let (reqs, _) = drain(&mut p);
        assert!(matches!(reqs[..], [Req::Leave(_)]));
        assert!(p.has_left());
    }

    #[test]
    fn audio_relay_offers_once_both_tracks_are_accepted() {
        let now = Instant::now();
        let cfg = ParticipantConfig {
            publish: Some(PublishSpec {
                cid: "v".into(),
                name: "censored".into(),
                width: 640,
                height: 360,
            }),
            audio: true,
            ..Default::default()
        };
        let mut p = Participant::new(now, cfg, addr(40006), addr(40007)).unwrap();
        p.handle_response(now, join(vec![])).unwrap();
        let (reqs, _) = drain(&mut p);
        let cids: Vec<_> = reqs
            .iter()
            .filter_map(|r| match r {
                Req::AddTrack(a) => Some((a.cid.clone(), a.r#type)),
                _ => None,
            })
            .collect();
        assert_eq!(
            cids,
            vec![
                ("v".to_string(), proto::TrackType::Video as i32),
                ("v-audio".to_string(), proto::TrackType::Audio as i32)
            ]
        );
        let published = |cid: &str| {
            Resp::TrackPublished(proto::TrackPublishedResponse {
                cid: cid.into(),
                track: Some(proto::TrackInfo {
                    sid: format!("TR_{cid}"),
                    ..Default::default()
                }),
            })
        };
        p.handle_response(now, published("v")).unwrap();
        let (reqs, _) = drain(&mut p);
        assert!(
            reqs.is_empty(),
            "no offer before the audio track is accepted"
        );
        p.handle_response(now, published("v-audio")).unwrap();
        let (reqs, _) = drain(&mut p);
        let Some(Req::Offer(o)) = reqs.into_iter().next() else {
            panic!("no offer");
        };
        assert!(o.sdp.contains("H264") && o.sdp.contains("opus"));
        assert_eq!(o.mid_to_track_id.len(), 2);
    }

    #[test]
    fn trickle_candidates_are_parsed_and_tcp_ignored() {
        let now = Instant::now();
        let mut p =
            Participant::new(now, ParticipantConfig::default(), addr(40004), addr(40005)).unwrap();
        for (c, target) in [
            ("candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host", 1),
            (
                "candidate:2 1 tcp 1671430143 127.0.0.1 7881 typ host tcptype passive",
                0,
            ),
            ("", 1),
        ] {
            p.handle_response(
                now,
                Resp::Trickle(proto::TrickleRequest {
                    candidate_init: signal::candidate_init(c),
                    target,
                    ..Default::default()
                }),
            )
            .unwrap();
        }
        assert!(p
            .handle_response(
                now,
                Resp::Trickle(proto::TrickleRequest {
                    candidate_init: "not json".into(),
                    target: 1,
                    ..Default::default()
                })
            )
            .is_err());
    }
}
