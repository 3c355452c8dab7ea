//! `loadgen-floor`: what the kernel alone charges to move one call's frames on
//! this machine, with no bridge at all.
//!
//! Every 20 ms, for each of N calls, a "bridge" thread does the four system calls
//! any SIP-to-WebSocket bridge must do for one frame each way: read the phone's RTP
//! packet, write a `media` message to the bot's TCP socket, read the bot's audio
//! message, write an RTP packet to the phone. A "peer" thread plays phone and bot:
//! it writes the RTP packet and the bot message, and reads what the bridge wrote.
//! There is no readiness waiting, no parsing, no encoding and no timer per call:
//! the data is already there when it is read. The figure printed is the bridge
//! thread's CPU time as a percentage of one core per call, which is the lowest any
//! bridge built on these sockets can reach here.
//!
//! `--mode uring` does the same work through io_uring, with all of one 20 ms tick's
//! operations submitted in batches, to show how much of that cost is the system
//! call itself rather than the network stack behind it. `--mode epoll` puts both
//! sides' sockets in epoll sets and reads only what is reported ready, once per
//! tick: the cost an event-driven program adds before doing any work of its own.
//!
//! Exit codes: 0 figures printed; 2 the run could not be made.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

/// An RTP packet: 12-byte header and 160 bytes of G.711.
const RTP_BYTES: usize = 172;
/// A `media` event with 320 bytes of PCM in base64, as the bridge frames it.
const MEDIA_BYTES: usize = 540;
/// A bot's `response.audio.delta` with 320 bytes of PCM, masked, as a client sends it.
const DELTA_BYTES: usize = 480;
const TICK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One system call per packet.
    Plain,
    /// Each tick's operations batched through io_uring.
    Uring,
    /// Both sides' sockets in an epoll set, as in an event-driven program: each
    /// tick reads only what epoll reports ready (one `epoll_wait` per tick), and
    /// every arrival runs epoll's wake-up path in the kernel.
    Epoll,
}

#[derive(Parser)]
#[command(
    name = "loadgen-floor",
    version,
    about = "Measures the kernel's own cost of moving one call's frames (RTP in and out, WebSocket in and out) on loopback, with no bridge"
)]
struct Cli {
    /// Concurrent calls.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// How the bridge side does its I/O (with epoll, the peer side uses one too).
    #[arg(long, value_enum, default_value_t = Mode::Plain)]
    mode: Mode,
}

/// One call's four sockets: the bridge's ends and the peer's.
struct Call {
    rtp: UdpSocket,
    phone: UdpSocket,
    ws: TcpStream,
    bot: TcpStream,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen-floor: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if cli.calls == 0 || cli.secs == 0 {
        bail!("--calls and --secs must be at least 1");
    }
    let calls = open_calls(cli.calls)?;
    let peer: Vec<(UdpSocket, TcpStream)> = calls
        .iter()
        .map(|c| Ok((c.phone.try_clone()?, c.bot.try_clone()?)))
        .collect::<std::io::Result<_>>()?;
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(cli.secs);
    let mode = cli.mode;
    let peer = std::thread::spawn(move || peer_side(&peer, mode, start, end));
    // The bridge side runs half a tick after the peer, so what it reads is there.
    let mut bridge = BridgeSide::new(cli.mode, &calls)?;
    let (cpu, ticks) = ticked(start + TICK / 2, end, |late| bridge.tick(&calls, late))?;
    let (peer_cpu, _) = peer
        .join()
        .map_err(|_| anyhow::anyhow!("the peer thread panicked"))??;

    let wall = TICK.as_secs_f64() * ticks as f64;
    let per_call = |cpu: Duration| cpu.as_secs_f64() / wall * 100.0 / calls.len() as f64;
    let packets = ticks as f64 * calls.len() as f64 * 4.0;
    println!(
        "mode {}: {} calls, {} ticks ({} late)",
        match cli.mode {
            Mode::Plain => "plain",
            Mode::Uring => "uring",
            Mode::Epoll => "epoll",
        },
        calls.len(),
        ticks,
        bridge.late
    );
    println!(
        "bridge side: {:.4} % of one core per call, {:.2} us per packet, {} short reads",
        per_call(cpu),
        cpu.as_secs_f64() * 1e6 / packets,
        bridge.short
    );
    println!(
        "peer side:   {:.4} % of one core per call",
        per_call(peer_cpu)
    );
    if bridge.late * 10 > ticks {
        println!("note: over a tenth of the ticks ran late; the machine was saturated and the figures are high");
    }
    Ok(())
}

fn open_calls(n: usize) -> anyhow::Result<Vec<Call>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback TCP listener")?;
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let open = || -> std::io::Result<Call> {
            let rtp = UdpSocket::bind("127.0.0.1:0")?;
            let phone = UdpSocket::bind("127.0.0.1:0")?;
            rtp.connect(phone.local_addr()?)?;
            phone.connect(rtp.local_addr()?)?;
            let bot = TcpStream::connect(listener.local_addr()?)?;
            let (ws, _) = listener.accept()?;
            for s in [&rtp, &phone] {
                s.set_nonblocking(true)?;
            }
            for s in [&ws, &bot] {
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
            }
            Ok(Call {
                rtp,
                phone,
                ws,
                bot,
            })
        };
        calls.push(open().with_context(|| {
            format!(
                "open the sockets of call {} (each call takes four descriptors; see ulimit -n)",
                i + 1
            )
        })?);
    }
    Ok(calls)
}

/// Runs `tick` every 20 ms from `start` until `end`; returns this thread's CPU
/// time over the ticks and how many ran.
fn ticked(
    start: Instant,
    end: Instant,
    mut tick: impl FnMut(bool) -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, u64)> {
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let cpu0 = thread_cpu()?;
    let mut next = start;
    let mut ticks = 0;
    while next < end {
        let now = Instant::now();
        std::thread::sleep(next.saturating_duration_since(now));
        tick(now > next + TICK / 2)?;
        ticks += 1;
        next += TICK;
    }
    Ok((thread_cpu()? - cpu0, ticks))
}

fn peer_side(
    peer: &[(UdpSocket, TcpStream)],
    mode: Mode,
    start: Instant,
    end: Instant,
) -> anyhow::Result<(Duration, u64)> {
    let rtp = [0x80u8; RTP_BYTES];
    let delta = [b'd'; DELTA_BYTES];
    let mut buf = [0u8; 2048];
    let mut poller = match mode {
        Mode::Epoll => Some(Poller::new(
            peer.iter()
                .flat_map(|(p, b)| [p.as_raw_fd(), b.as_raw_fd()]),
        )?),
        _ => None,
    };
    ticked(start, end, |_| {
        for (phone, bot) in peer {
            // Sends are as the real ones: the first tick has nothing to read yet.
            let _ = phone.send(&rtp);
            let _ = (&*bot).write(&delta);
            if poller.is_none() {
                let _ = phone.recv(&mut buf);
                let _ = (&*bot).read(&mut buf);
            }
        }
        if let Some(poller) = poller.as_mut() {
            for token in poller.ready()? {
                let (phone, bot) = &peer[token / 2];
                let _ = match token % 2 {
                    0 => phone.recv(&mut buf),
                    _ => (&*bot).read(&mut buf),
                };
            }
        }
        Ok(())
    })
}

/// An epoll set (level-triggered) whose tokens are positions in a list of
/// descriptors.
struct Poller {
    epfd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: Vec<usize>,
}

impl Poller {
    fn new(fds: impl Iterator<Item = std::os::fd::RawFd>) -> anyhow::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            bail!("epoll_create1: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let epfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mut n = 0;
        for (token, fd) in fds.enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token as u64,
            };
            // SAFETY: both descriptors are open; `ev` is read during the call.
            if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                bail!("epoll_ctl: {}", std::io::Error::last_os_error());
            }
            n += 1;
        }
        Ok(Poller {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            ready: Vec::with_capacity(n),
        })
    }

    /// The tokens of the descriptors with something to read, without waiting.
    fn ready(&mut self) -> anyhow::Result<std::vec::Drain<'_, usize>> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `events` has room for `len` entries, which the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                0,
            )
        };
        if n < 0 {
            bail!("epoll_wait: {}", std::io::Error::last_os_error());
        }
        self.ready.clear();
        self.ready
            .extend(self.events[..n as usize].iter().map(|e| e.u64 as usize));
        Ok(self.ready.drain(..))
    }
}

struct BridgeSide {
    mode: Mode,
    ring: Option<io_uring::IoUring>,
    poller: Option<Poller>,
    bufs: Vec<[u8; 2048]>,
    /// Ticks that started more than half a tick late.
    late: u64,
    /// Reads that found less than a whole packet or message.
    short: u64,
}

impl BridgeSide {
    fn new(mode: Mode, calls: &[Call]) -> anyhow::Result<Self> {
        let poller = match mode {
            Mode::Epoll => Some(Poller::new(
                calls
                    .iter()
                    .flat_map(|c| [c.rtp.as_raw_fd(), c.ws.as_raw_fd()]),
            )?),
            _ => None,
        };
        let calls = calls.len();
        let ring = match mode {
            Mode::Plain | Mode::Epoll => None,
            Mode::Uring => {
                Some(io_uring::IoUring::new(1024).context("io_uring is not available here")?)
            }
        };
        let bufs = match mode {
            Mode::Plain | Mode::Epoll => vec![[0u8; 2048]],
            Mode::Uring => vec![[0u8; 2048]; 2 * calls],
        };
        Ok(BridgeSide {
            mode,
            ring,
            poller,
            bufs,
            late: 0,
            short: 0,
        })
    }

    fn tick(&mut self, calls: &[Call], late: bool) -> anyhow::Result<()> {
        self.late += u64::from(late);
        let media = [b'm'; MEDIA_BYTES];
        let rtp = [0x80u8; RTP_BYTES];
        match self.mode {
            Mode::Plain => {
                let buf = &mut self.bufs[0];
                for c in calls {
                    self.short += u64::from(!full(c.rtp.recv(buf), RTP_BYTES));
                    let _ = (&c.ws).write(&media);
                    self.short += u64::from(!full((&c.ws).read(buf), DELTA_BYTES));
                    let _ = c.rtp.send(&rtp);
                }
            }
            Mode::Epoll => {
                let buf = &mut self.bufs[0];
                let poller = self.poller.as_mut().expect("epoll mode has a poller");
                let mut got = 0;
                for token in poller.ready()? {
                    let c = &calls[token / 2];
                    let (read, want) = match token % 2 {
                        0 => (c.rtp.recv(buf), RTP_BYTES),
                        _ => ((&c.ws).read(buf), DELTA_BYTES),
                    };
                    got += 1;
                    self.short += u64::from(!full(read, want));
                }
                // Whatever was not ready is a read that found nothing.
                self.short += (2 * calls.len() - got.min(2 * calls.len())) as u64;
                for c in calls {
                    let _ = (&c.ws).write(&media);
                    let _ = c.rtp.send(&rtp);
                }
            }
            Mode::Uring => {
                use io_uring::{opcode, types};
                let ring = self.ring.as_mut().expect("uring mode has a ring");
                let mut queued = 0usize;
                // A read's user data is the bytes it must get; a send's is 0.
                let recv = |fd: &dyn AsRawFd, buf: &mut [u8; 2048], want: usize| {
                    opcode::Recv::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), 2048)
                        .flags(libc::MSG_DONTWAIT)
                        .build()
                        .user_data(want as u64)
                };
                let send = |fd: &dyn AsRawFd, bytes: &[u8]| {
                    opcode::Send::new(
                        types::Fd(fd.as_raw_fd()),
                        bytes.as_ptr(),
                        bytes.len() as u32,
                    )
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(0)
                };
                for (c, bufs) in calls.iter().zip(self.bufs.chunks_exact_mut(2)) {
                    let (a, b) = bufs.split_at_mut(1);
                    let ops = [
                        recv(&c.rtp, &mut a[0], RTP_BYTES),
                        send(&c.ws, &media),
                        recv(&c.ws, &mut b[0], DELTA_BYTES),
                        send(&c.rtp, &rtp),
                    ];
                    for op in ops {
                        if ring.submission().is_full() {
                            ring.submit_and_wait(queued)?;
                            self.short += short_reads(ring);
                            queued = 0;
                        }
                        // SAFETY: the buffers (`self.bufs`, `media`, `rtp`) outlive
                        // the operation: every queued one completes before this
                        // function returns.
                        unsafe { ring.submission().push(&op) }.expect("the queue has room");
                        queued += 1;
                    }
                }
                ring.submit_and_wait(queued)?;
                self.short += short_reads(ring);
            }
        }
        Ok(())
    }
}

/// Takes the completions waiting in `ring`; returns how many reads got less
/// than their user data asks.
fn short_reads(ring: &mut io_uring::IoUring) -> u64 {
    ring.completion()
        .filter(|e| e.user_data() > 0 && i64::from(e.result()) < e.user_data() as i64)
        .count() as u64
}

/// Whether a read got at least `want` bytes (a would-block counts as short).
fn full(read: std::io::Result<usize>, want: usize) -> bool {
    matches!(read, Ok(n) if n >= want)
}

/// This thread's CPU time, user and system.
fn thread_cpu() -> anyhow::Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        bail!("getrusage: {}", std::io::Error::last_os_error());
    }
    // SAFETY: rc == 0, so the struct was filled.
    let usage = unsafe { usage.assume_init() };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}
