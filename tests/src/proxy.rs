//! A fault-injecting TCP proxy for tests: put it between a process and
//! RabbitMQ or Postgres, then cut, stall or refuse the link on command.
//!
//! ```text
//!   process ──► 127.0.0.1:<proxy port> ──► upstream (e.g. 127.0.0.1:5672)
//!                 cut() · stall()/resume() · refuse(bool)
//! ```
//!
//! Each accepted connection gets its own upstream connection and two pumps
//! (one per direction). A clean end of stream in one direction is passed
//! on as a half-close; an error in either direction ends the connection.
//!
//! - [`FaultProxy::cut`] closes every open connection at once, with a TCP
//!   reset on both sides (what a dead link or a killed middlebox looks
//!   like), and keeps accepting new connections.
//! - [`FaultProxy::stall`] makes every link silent: the proxy keeps
//!   accepting connections and reading what both sides send, but forwards
//!   nothing, not even an end of stream, so peers see neither data nor a
//!   close (use it to exceed AMQP heartbeats). What is read while stalled is
//!   discarded.
//! - [`FaultProxy::resume`] ends the stall by **dropping** (resetting) every
//!   connection that lived through it, including those accepted during it,
//!   rather than delivering the held bytes: after a long silence the peers
//!   have usually timed out anyway, and a half-delivered stream would be
//!   garbage to them. Connections made after `resume` forward normally.
//! - [`FaultProxy::refuse`] makes the proxy reset new connections as soon as
//!   it accepts them (the client sees a reset or an end of stream right
//!   after connecting); open connections are not touched.
//!
//! Dropping the proxy stops it and resets every open connection.
//!
//! To tell connections apart, the proxy keeps the first bytes each client
//! sent ([`FaultProxy::open_matching`]): an AMQP client's connection name,
//! for one, travels in its first frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy with fault switches; see the module documentation.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    upstream: SocketAddr,
    stop: CancellationToken,
    refuse: AtomicBool,
    stalled: AtomicBool,
    /// The token of the current generation of connections: `cut` and
    /// `resume` cancel it and start the next one. Also taken by the accept
    /// loop, so a connection belongs to exactly one generation.
    generation: Mutex<CancellationToken>,
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    /// Connections being served, by id.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// A connection being served.
struct Conn {
    /// Its generation: cancelled by `cut` and `resume`.
    token: CancellationToken,
    /// The first bytes its client sent.
    head: Mutex<Vec<u8>>,
}

/// How many of the client's first bytes are kept per connection.
const HEAD_BYTES: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn generation(&self) -> MutexGuard<'_, CancellationToken> {
        lock(&self.generation)
    }

    /// Ends the current generation of connections; returns the guard so the
    /// caller can change switches before new connections join.
    fn next_generation(&self) -> MutexGuard<'_, CancellationToken> {
        let mut current = self.generation();
        let old = std::mem::replace(&mut *current, self.stop.child_token());
        old.cancel();
        current
    }
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) forwarding to `upstream`.
    /// Must be called within a tokio runtime.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("proxy address");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            upstream,
            stop: stop.clone(),
            refuse: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            generation: Mutex::new(stop.child_token()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy { addr, shared, stop }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every open connection now; new connections are accepted.
    pub fn cut(&self) {
        drop(self.shared.next_generation());
        self.shared.cuts.fetch_add(1, SeqCst);
    }

    /// Makes every link silent until [`FaultProxy::resume`].
    pub fn stall(&self) {
        self.shared.stalled.store(true, SeqCst);
    }

    /// Ends a stall: resets every connection that lived through it, then
    /// forwards again for new connections.
    pub fn resume(&self) {
        let _generation = self.shared.next_generation();
        // Cleared under the generation lock: a connection accepted from
        // now on belongs to the new generation and never sees the stall.
        self.shared.stalled.store(false, SeqCst);
    }

    /// While `true`, new connections are reset as soon as they are accepted.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, SeqCst);
    }

    /// Connections accepted and proxied so far (refused ones not counted).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(SeqCst)
    }

    /// Connections reset at once because of [`FaultProxy::refuse`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(SeqCst)
    }

    /// Calls of [`FaultProxy::cut`] so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(SeqCst)
    }

    /// Connections open right now (a cut connection no longer counts,
    /// even before its sockets are closed).
    pub fn open(&self) -> usize {
        self.open_matching(b"")
    }

    /// Open connections whose client sent `needle` within its first
    /// 4 KiB (say, an AMQP connection name); all of them for `b""`.
    pub fn open_matching(&self, needle: &[u8]) -> usize {
        lock(&self.shared.open)
            .values()
            .filter(|conn| !conn.token.is_cancelled())
            .filter(|conn| {
                let head = lock(&conn.head);
                needle.is_empty() || head.windows(needle.len()).any(|w| w == needle)
            })
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or similar: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.refuse.load(SeqCst) {
            shared.refused.fetch_add(1, SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let id = shared.accepted.fetch_add(1, SeqCst);
        let conn = Arc::new(Conn {
            token: shared.generation().clone(),
            head: Mutex::new(Vec::new()),
        });
        lock(&shared.open).insert(id, conn.clone());
        tokio::spawn(serve(client, shared.clone(), id, conn));
    }
}

/// Removes a connection from the open set when dropped.
struct OpenGuard<'a>(&'a Shared, u64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.open).remove(&self.1);
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>, id: u64, conn: Arc<Conn>) {
    let _open = OpenGuard(&shared, id);
    let token = &conn.token;
    let connected = tokio::select! {
        _ = token.cancelled() => None,
        u = TcpStream::connect(shared.upstream) => u.ok(),
    };
    let Some(mut upstream) = connected else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let abrupt = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let both = async {
            tokio::try_join!(
                pump(cr, uw, &shared, token, Some(&conn.head)),
                pump(ur, cw, &shared, token, None)
            )
        };
        tokio::select! {
            _ = token.cancelled() => true,
            r = both => r.is_err(),
        }
    };
    if abrupt {
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Copies one direction until the end of stream (passed on as a
/// half-close) or an error. While stalled, reads and discards. Keeps the
/// first bytes read in `head`, if given.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    shared: &Shared,
    token: &CancellationToken,
    head: Option<&Mutex<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if let Some(head) = head {
            let mut head = lock(head);
            let room = HEAD_BYTES.saturating_sub(head.len()).min(n);
            head.extend_from_slice(&buf[..room]);
        }
        // A connection that saw the stall never forwards again: `resume`
        // cancels its generation before it clears the flag.
        let silent = shared.stalled.load(SeqCst) || token.is_cancelled();
        if n == 0 {
            if silent {
                // Not even the close goes through; the stall's end drops us.
                token.cancelled().await;
                return Ok(());
            }
            to.shutdown().await?;
            return Ok(());
        }
        if silent {
            continue;
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(5);

    /// An echo server: writes back what it reads, half-closes on end of
    /// stream.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    async fn echo_once(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(LONG, s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got, msg);
    }

    /// True when the peer closed or reset the connection within `LONG`.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(LONG, s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// True when nothing at all arrives within `SHORT` (no data, no close).
    async fn silent(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        tokio::time::timeout(SHORT, s.read(&mut b)).await.is_err()
    }

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !f() {
            assert!(started.elapsed() < LONG, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_half_close_is_forwarded() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut s, b"hello").await;
        assert_eq!(proxy.open_matching(b"hell"), 1);
        assert_eq!(proxy.open_matching(b"world"), 0);
        // A megabyte, written and read at once (the echo pushes back).
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.into_split();
        let expected = big.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&big).await.unwrap();
            // Half-close: the echo server sees the end and closes its side.
            w.shutdown().await.unwrap();
            w
        });
        let mut got = Vec::new();
        tokio::time::timeout(LONG, r.read_to_end(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the echoed bytes differ");
        drop(writer.await.unwrap());
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.cuts(), 0);
        wait_until("the connection is closed", || proxy.open() == 0).await;
    }

    #[tokio::test]
    async fn cut_closes_open_connections_and_keeps_accepting() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut a, b"a").await;
        echo_once(&mut b, b"b").await;
        proxy.cut();
        assert_eq!(proxy.open(), 0, "cut connections still count as open");
        assert!(closed(&mut a).await, "a survived the cut");
        assert!(closed(&mut b).await, "b survived the cut");
        wait_until("cut connections are gone", || proxy.open() == 0).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut c, b"after the cut").await;
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(proxy.accepted(), 3);
        assert_eq!(proxy.open(), 1);
    }

    #[tokio::test]
    async fn stall_forwards_nothing_and_resume_drops_what_lived_through_it() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut before, b"before").await;
        proxy.stall();
        before.write_all(b"held").await.unwrap();
        assert!(silent(&mut before).await, "data passed a stalled link");
        // Accepted while stalled, but just as silent; even a close stays
        // unseen.
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        during.write_all(b"during").await.unwrap();
        assert!(silent(&mut during).await, "data passed a stalled link");
        let (mut r, mut w) = TcpStream::connect(proxy.addr()).await.unwrap().into_split();
        w.shutdown().await.unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(SHORT, r.read(&mut byte))
                .await
                .is_err(),
            "the echo's close passed a stalled link"
        );
        proxy.resume();
        assert!(
            closed(&mut before).await,
            "resume kept a stalled connection"
        );
        assert!(
            closed(&mut during).await,
            "resume kept a stalled connection"
        );
        assert!(
            matches!(
                tokio::time::timeout(LONG, r.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            ),
            "resume kept a stalled connection"
        );
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut after, b"after").await;
        assert_eq!(proxy.cuts(), 0, "resume is not counted as a cut");
        assert_eq!(proxy.accepted(), 4);
    }

    #[tokio::test]
    async fn refuse_resets_new_connections_only() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        // Accepted (the kernel's handshake alone does not mean the proxy
        // has taken it yet).
        echo_once(&mut open, b"open").await;
        proxy.refuse(true);
        // The kernel completes the handshake; the proxy resets it at once.
        if let Ok(mut s) = TcpStream::connect(proxy.addr()).await {
            let _ = s.write_all(b"x").await;
            assert!(closed(&mut s).await, "a refused connection stayed open");
        }
        wait_until("the refusal is counted", || proxy.refused() == 1).await;
        echo_once(&mut open, b"still open").await;
        proxy.refuse(false);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        echo_once(&mut s, b"accepted again").await;
        assert_eq!(proxy.accepted(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_resets_the_client() {
        // A port nobody listens on (bound, then released).
        let upstream = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let proxy = FaultProxy::start(upstream);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut s).await);
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let proxy = FaultProxy::start(echo_server().await);
        let addr = proxy.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        echo_once(&mut s, b"x").await;
        drop(proxy);
        assert!(closed(&mut s).await, "a connection outlived the proxy");
    }
}
