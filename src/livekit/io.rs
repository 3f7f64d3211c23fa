//! The thin IO around [`Participant`]: one tokio task owns the signalling
//! WebSocket and one UDP socket per peer connection, feeds what arrives into
//! the sans-IO participant and sends what it hands out. The session talks
//! to the task through channels only.

use super::fault::{Fault, RtpFaults};
use super::participant::{Participant, ParticipantConfig, ParticipantEvent, ParticipantOutput, Pc};
use super::signal;
use crate::error::LiveKitError;
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// What the session asks of a connection.
#[derive(Debug)]
pub enum Command {
    /// One H.264 access unit (Annex B) for our published track.
    Video { rtp_time_90k: u64, data: Vec<u8> },
    /// One Opus packet for our audio track (audio relay).
    Audio { rtp_time_48k: u64, data: Vec<u8> },
    /// Ask the remote broadcaster for a key frame.
    RequestKeyframe,
    /// Leave the room and end the task.
    Leave,
}

/// How long the signalling connection may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A running participant.
pub struct Connection {
    pub events: mpsc::UnboundedReceiver<ParticipantEvent>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub task: JoinHandle<Result<(), LiveKitError>>,
}

/// Connects to `url` with `token` and runs the participant in a task.
/// `bind_ip` is the address of the local UDP sockets (and of the host ICE
/// candidates we announce): 127.0.0.1 for a server on this machine.
/// `faults` (tests only) drops or corrupts RTP received on the subscriber
/// socket.
pub async fn connect(
    url: &str,
    token: &str,
    cfg: ParticipantConfig,
    bind_ip: IpAddr,
    faults: Option<RtpFaults>,
) -> Result<Connection, LiveKitError> {
    let ws_url = signal::connect_url(url, token, false);
    let safe_url = signal::connect_url(url, "***", false);
    // A server that drops packets would hold this (and the session table)
    // for the TCP timeout: give up after CONNECT_TIMEOUT instead.
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async(ws_url.as_str()),
    )
    .await
    .map_err(|_| LiveKitError::Connect {
        url: safe_url.clone(),
        reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
    })?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(r)
            if matches!(r.status().as_u16(), 401 | 403) =>
        {
            LiveKitError::Refused {
                url: safe_url.clone(),
                status: r.status().as_u16(),
                reason: r
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .unwrap_or_default(),
            }
        }
        e => LiveKitError::Connect {
            url: safe_url.clone(),
            reason: e.to_string(),
        },
    })?;
    let bind = |ip| async move {
        UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| LiveKitError::Socket(format!("bind {ip}: {e}")))
    };
    let sub = bind(bind_ip).await?;
    let publ = bind(bind_ip).await?;
    let sub_addr = sub
        .local_addr()
        .map_err(|e| LiveKitError::Socket(e.to_string()))?;
    let pub_addr = publ
        .local_addr()
        .map_err(|e| LiveKitError::Socket(e.to_string()))?;
    let participant = Participant::new(Instant::now(), cfg, sub_addr, pub_addr)?;
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (commands, cmd_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(participant, ws, sub, publ, ev_tx, cmd_rx, faults));
    Ok(Connection {
        events,
        commands,
        task,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    mut p: Participant,
    mut ws: Ws,
    sub: UdpSocket,
    publ: UdpSocket,
    ev_tx: mpsc::UnboundedSender<ParticipantEvent>,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    mut faults: Option<RtpFaults>,
) -> Result<(), LiveKitError> {
    let mut sub_buf = vec![0u8; 2048];
    let mut pub_buf = vec![0u8; 2048];
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| LiveKitError::Signal(e.to_string());
    loop {
        // Everything the participant wants done, until it only waits.
        let deadline = loop {
            match p.poll_output()? {
                ParticipantOutput::Signal(b) => {
                    ws.send(Message::Binary(b.into())).await.map_err(ws_err)?
                }
                ParticipantOutput::Transmit {
                    pc,
                    destination,
                    contents,
                } => {
                    let sock = if pc == Pc::Subscriber { &sub } else { &publ };
                    // A lost datagram is the transport's business (NACK, PLI).
                    if let Err(e) = sock.send_to(&contents, destination).await {
                        tracing::debug!("send to {destination}: {e}");
                    }
                }
                ParticipantOutput::Event(e) => {
                    // The session may have stopped listening; keep serving
                    // the connection until it says Leave.
                    let _ = ev_tx.send(e);
                }
                ParticipantOutput::Timeout(t) => break t,
            }
        };
        if p.has_left() {
            let _ = ws.close(None).await;
            return Ok(());
        }
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => p.handle_signal(Instant::now(), &b)?,
                Some(Ok(Message::Close(_))) | None => {
                    let _ = ev_tx.send(ParticipantEvent::Left {
                        reason: "signalling closed".into(),
                        code: livekit_protocol::DisconnectReason::UnknownReason,
                    });
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_err(e)),
            },
            r = sub.recv_from(&mut sub_buf) => match r {
                Ok((n, src)) => {
                    let fault = faults.as_mut().map_or(Fault::None, |f| f.apply(&mut sub_buf[..n]));
                    if fault != Fault::Dropped {
                        p.handle_udp(Instant::now(), Pc::Subscriber, src, &sub_buf[..n])?;
                    }
                }
                Err(e) => tracing::debug!("subscriber socket: {e}"),
            },
            r = publ.recv_from(&mut pub_buf) => match r {
                Ok((n, src)) => p.handle_udp(Instant::now(), Pc::Publisher, src, &pub_buf[..n])?,
                Err(e) => tracing::debug!("publisher socket: {e}"),
            },
            c = cmd_rx.recv() => match c {
                Some(Command::Video { rtp_time_90k, data }) => {
                    p.write_video(Instant::now(), rtp_time_90k, data)?;
                }
                Some(Command::Audio { rtp_time_48k, data }) => {
                    p.write_audio(Instant::now(), rtp_time_48k, data)?;
                }
                Some(Command::RequestKeyframe) => p.request_keyframe(Instant::now()),
                Some(Command::Leave) | None => p.leave(),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        // Timers run even while packets keep every other branch busy.
        let now = Instant::now();
        if now >= deadline {
            p.handle_timeout(now)?;
        }
    }
}
