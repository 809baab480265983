//! Network side: the accept loop, one task per connection, and the orderly
//! shutdown on SIGTERM / SIGINT.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::engine::Engine;
use crate::proto::{self, HEADER_LEN, MAX_DECISION_FRAME, MAX_PAYLOAD, Malformed, Txn};

/// Listen backlog; the kernel caps it at net.core.somaxconn (Go and glibc's
/// SOMAXCONN users ask for the same).
const BACKLOG: u32 = 4096;
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What the server did; reported at shutdown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests decided (and so applied to the state).
    pub requests: u64,
    /// Connections closed for a malformed or truncated frame.
    pub malformed: u64,
}

/// Totals over finished connections. Each connection counts locally and adds its
/// counts once, when it ends, so the request path touches no shared counter.
#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    malformed: AtomicU64,
}

impl Totals {
    fn add(&self, c: Counts) {
        self.requests.fetch_add(c.requests, Ordering::Relaxed);
        self.malformed.fetch_add(c.malformed, Ordering::Relaxed);
    }

    fn get(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// Binds a listening TCP socket (SO_REUSEADDR, like Go's listeners).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A listening server with its shutdown signals installed.
pub struct Server {
    listener: TcpListener,
    engine: Arc<Engine>,
    sigterm: Signal,
    sigint: Signal,
}

impl Server {
    /// Installs the SIGTERM and SIGINT handlers; from here on those signals shut
    /// the server down instead of killing the process.
    pub fn new(listener: TcpListener, engine: Arc<Engine>) -> io::Result<Self> {
        Ok(Server {
            listener,
            engine,
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, closes every
    /// connection, waits for their tasks to finish and returns the totals.
    pub async fn run(self) -> Counts {
        let Server {
            listener,
            engine,
            mut sigterm,
            mut sigint,
        } = self;
        let totals = Arc::new(Totals::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        // Every connection task holds a clone of `alive_tx`; recv() yields None
        // once all of them have been dropped, i.e. every connection has ended.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);

        loop {
            tokio::select! {
                biased;
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        tokio::spawn(connection(
                            stream,
                            Arc::clone(&engine),
                            shutdown_rx.clone(),
                            Arc::clone(&totals),
                            alive_tx.clone(),
                        ));
                    }
                    // The peer gave up before we accepted: nothing to do.
                    Err(e) if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                    Err(e) => {
                        eprintln!("riskd-rust: accept: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }

        drop(listener);
        shutdown_tx.send_replace(());
        drop(alive_tx);
        alive_rx.recv().await;
        totals.get()
    }
}

/// One connection's task: serves it until it ends or the server shuts down.
async fn connection(
    stream: TcpStream,
    engine: Arc<Engine>,
    mut shutdown: watch::Receiver<()>,
    totals: Arc<Totals>,
    _alive: mpsc::Sender<()>,
) {
    // Small request/response frames: no Nagle delay (Go's default, too). Failure
    // only costs latency, so it is not worth dropping the connection for.
    let _ = stream.set_nodelay(true);
    let mut counts = Counts::default();
    tokio::select! {
        biased;
        () = serve(stream, &engine, &mut counts) => {}
        // Changed or sender gone: either way the server is shutting down.
        _ = shutdown.changed() => {}
    }
    // The stream was dropped (closed) with `serve`'s future.
    totals.add(counts);
}

/// Serves requests on one connection, one at a time, until the peer closes it, an
/// I/O error occurs or a frame is malformed (which closes it without an answer).
pub async fn serve<S>(stream: S, engine: &Engine, counts: &mut Counts)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = BufReader::new(stream);
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let mut out = Vec::with_capacity(MAX_DECISION_FRAME);
    loop {
        let txn = match read_request(&mut conn, &mut payload).await {
            Ok(Some(txn)) => txn,
            Ok(None) => return,
            Err(ReadError::Malformed) => {
                counts.malformed += 1;
                return;
            }
            Err(ReadError::Io) => return,
        };
        let decision = engine.decide(&txn);
        counts.requests += 1;
        out.clear();
        decision.encode_frame(&mut out);
        if conn.get_mut().write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Why a connection stops being read.
#[derive(Debug)]
enum ReadError {
    /// A malformed or truncated frame: close without an answer, count it.
    Malformed,
    /// An I/O error (e.g. reset by the peer): close, not the peer's protocol fault.
    Io,
}

impl From<Malformed> for ReadError {
    fn from(_: Malformed) -> Self {
        ReadError::Malformed
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Malformed,
            _ => ReadError::Io,
        }
    }
}

/// Reads the next request. `Ok(None)`: the peer closed the connection between
/// frames. A close inside a frame is a truncated (malformed) frame.
async fn read_request<R>(r: &mut R, payload: &mut [u8]) -> Result<Option<Txn>, ReadError>
where
    R: AsyncBufRead + Unpin,
{
    if r.fill_buf().await?.is_empty() {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = proto::payload_len(header)?;
    let payload = &mut payload[..len];
    r.read_exact(payload).await?;
    Ok(Some(Txn::parse(payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hex, vector_params, vectors};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// All cases on one in-memory connection, then every malformed frame on a
    /// connection of its own: answers match, malformed connections are closed
    /// without an answer and counted.
    #[test]
    fn shared_vectors_over_a_stream() {
        let v = vectors();
        let engine = Engine::new(vector_params(&v));
        block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut counts = Counts::default();
            let cases = v["cases"].as_array().unwrap();
            let client_side = async {
                for case in cases {
                    let req = hex(case["request"].as_str().unwrap());
                    let want = hex(case["response"].as_str().unwrap());
                    client
                        .write_all(&(req.len() as u32).to_be_bytes())
                        .await
                        .unwrap();
                    client.write_all(&req).await.unwrap();
                    let mut len = [0u8; 4];
                    client.read_exact(&mut len).await.unwrap();
                    let mut got = vec![0u8; u32::from_be_bytes(len) as usize];
                    client.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, want);
                }
                drop(client);
            };
            tokio::join!(serve(server, &engine, &mut counts), client_side);
            assert_eq!(
                counts,
                Counts {
                    requests: cases.len() as u64,
                    malformed: 0
                }
            );

            for case in v["malformed"].as_array().unwrap() {
                let frame = hex(case["frame"].as_str().unwrap());
                let (mut client, server) = tokio::io::duplex(1 << 16);
                client.write_all(&frame).await.unwrap();
                // A truncated frame is only detectable once the peer stops sending.
                client.shutdown().await.unwrap();
                let mut counts = Counts::default();
                serve(server, &engine, &mut counts).await;
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty(), "{}: answered", case["why"]);
                assert_eq!(counts.malformed, 1, "{}", case["why"]);
                assert_eq!(counts.requests, 0);
            }
        });
    }

    #[test]
    fn close_between_frames_is_not_malformed() {
        let engine = Engine::new(vector_params(&vectors()));
        block_on(async {
            let (client, server) = tokio::io::duplex(64);
            drop(client);
            let mut counts = Counts::default();
            serve(server, &engine, &mut counts).await;
            assert_eq!(counts, Counts::default());
        });
    }
}
