//! Impaired links (issue 14): what `tc netem` does to an interface's egress, done by the
//! switch to the frames it delivers to one port: delay with jitter, loss, duplication,
//! reordering, a rate limit with a bounded queue. No I/O and no clock: the caller passes the
//! time (nanoseconds on any monotonic scale) with each call, as [`crate::core`] does.
//!
//! Semantics, in netem's order for each frame ([`Shaper::push`]):
//! 1. duplication: with probability `dup` the frame goes twice (each copy is delayed on its
//!    own, so the copies may arrive apart);
//! 2. loss: with probability `loss` one copy is lost (a frame that was not duplicated is
//!    gone);
//! 3. the queue: a frame that finds `limit` frames waiting is dropped (`dropped`);
//! 4. reordering: with probability `reorder` a frame skips the delay and goes at once, ahead
//!    of the frames waiting (netem's `reorder P` with gap 1; it needs a delay to act on);
//! 5. delay: `delay` plus a jitter drawn uniformly from `[-jitter, +jitter]` (netem's
//!    default, correlation-free distribution), never below zero; without a rate, frames
//!    leave in the order of their times, so jitter larger than the gap between frames
//!    reorders them, as on netem;
//! 6. rate: a frame leaves no sooner than the previous one has finished, plus its own
//!    transmission time at `rate` bits per second (netem's `rate`): a token bucket of one
//!    frame whose backlog waits in the bounded queue.
//!
//! Randomness comes from a seeded generator (SplitMix64), so the same seed and the same
//! frames give the same decisions: a failing run can be repeated (`seed=`).

#![deny(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

/// netem's default queue limit, in frames.
pub const DEFAULT_LIMIT: usize = 1000;
/// Longest delay or jitter accepted (ms).
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and its output for a seed never
/// changes, which is what a repeatable run needs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (no draw when `p` is 0, so an unused option leaves the
    /// sequence of the others unchanged).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// A seed for `port` derived from the switch's seed (different ports, different sequences).
pub fn port_seed(switch_seed: u64, port: u32) -> u64 {
    Rng::new(switch_seed ^ (u64::from(port) << 32 | u64::from(port))).next_u64()
}

/// One port's impairment, as the console set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub delay_ns: u64,
    pub jitter_ns: u64,
    /// Probabilities, 0..=1.
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    /// Bits per second; 0 = no limit.
    pub rate_bps: u64,
    /// Most frames waiting.
    pub limit: usize,
    pub seed: u64,
}

impl Settings {
    /// No impairment at all (what `impair PORT clear` leaves).
    pub fn none(seed: u64) -> Settings {
        Settings {
            delay_ns: 0,
            jitter_ns: 0,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            rate_bps: 0,
            limit: DEFAULT_LIMIT,
            seed,
        }
    }

    /// Parse `key=value` options (`delay=MS jitter=MS loss=PCT dup=PCT reorder=PCT
    /// rate=MBIT limit=FRAMES seed=N`) over the defaults: each `impair` command says the
    /// whole impairment, as `tc qdisc replace … netem` does. The error names the option.
    pub fn parse(opts: &[&str], default_seed: u64) -> Result<Settings, String> {
        let mut s = Settings::none(default_seed);
        if opts.is_empty() {
            return Err(
                "no option given (delay=MS jitter=MS loss=PCT dup=PCT reorder=PCT \
                        rate=MBIT limit=FRAMES seed=N, or clear)"
                    .into(),
            );
        }
        for o in opts {
            let Some((k, v)) = o.split_once('=') else {
                return Err(format!("'{o}' is not KEY=VALUE"));
            };
            match k {
                "delay" => s.delay_ns = ms(k, v)?,
                "jitter" => s.jitter_ns = ms(k, v)?,
                "loss" => s.loss = pct(k, v)?,
                "dup" | "duplicate" => s.dup = pct(k, v)?,
                "reorder" => s.reorder = pct(k, v)?,
                "rate" => s.rate_bps = rate(v)?,
                "limit" => {
                    s.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or_else(|| {
                            format!("limit: '{v}' is not a number of frames 1..1000000")
                        })?
                }
                "seed" => {
                    s.seed = v
                        .parse::<u64>()
                        .map_err(|_| format!("seed: '{v}' is not an unsigned 64-bit number"))?
                }
                _ => {
                    return Err(format!(
                        "unknown option '{k}' (delay jitter loss dup reorder rate limit seed)"
                    ));
                }
            }
        }
        if s.reorder > 0.0 && s.delay_ns == 0 {
            return Err("reorder needs a delay (frames are reordered by skipping it)".into());
        }
        Ok(s)
    }

    /// Whether every frame goes at once (no delay, jitter or rate): only loss and
    /// duplication act, and nothing is queued.
    fn immediate(&self) -> bool {
        self.delay_ns == 0 && self.jitter_ns == 0 && self.rate_bps == 0
    }
}

fn ms(k: &str, v: &str) -> Result<u64, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * scale <= MAX_DELAY_MS => {
            Ok((x * scale * 1e6).round() as u64)
        }
        _ => Err(format!(
            "{k}: '{v}' is not a time in milliseconds 0..{MAX_DELAY_MS}"
        )),
    }
}

fn pct(k: &str, v: &str) -> Result<f64, String> {
    let num = v.strip_suffix('%').unwrap_or(v);
    match num.parse::<f64>() {
        Ok(x) if (0.0..=100.0).contains(&x) => Ok(x / 100.0),
        _ => Err(format!("{k}: '{v}' is not a percentage 0..100")),
    }
}

fn rate(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let (num, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suf, sc)| lower.strip_suffix(suf).map(|n| (n, *sc)))
        .unwrap_or((lower.as_str(), 1e6));
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x * scale >= 8000.0 && x * scale <= 1e12 => {
            Ok((x * scale).round() as u64)
        }
        _ => Err(format!(
            "rate: '{v}' is not a rate (Mbit/s, or with kbit/mbit/gbit) from 8kbit to 1000gbit"
        )),
    }
}

fn fmt_ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms.fract() == 0.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms}ms")
    }
}

fn fmt_pct(p: f64) -> String {
    format!("{}%", (p * 100.0 * 1e6).round() / 1e6)
}

impl fmt::Display for Settings {
    /// The options that would set this impairment again (`impair PORT <this>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={} jitter={} loss={} dup={} reorder={} rate={} limit={} seed={}",
            fmt_ms(self.delay_ns),
            fmt_ms(self.jitter_ns),
            fmt_pct(self.loss),
            fmt_pct(self.dup),
            fmt_pct(self.reorder),
            if self.rate_bps == 0 {
                "none".to_string()
            } else {
                format!("{}kbit", self.rate_bps as f64 / 1e3)
            },
            self.limit,
            self.seed
        )
    }
}

/// What an impairment did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames offered to the impairment.
    pub frames: u64,
    /// Frames (and copies) handed on to the port.
    pub sent: u64,
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames that skipped the delay.
    pub reordered: u64,
    /// Frames dropped because `limit` frames were waiting.
    pub dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Waiting {
    at_ns: u64,
    seq: u64,
    frame: Vec<u8>,
}

/// One port's impairment at work: its settings, its generator, its queue and its counters.
#[derive(Clone, Debug)]
pub struct Shaper {
    pub settings: Settings,
    pub stats: Stats,
    rng: Rng,
    queue: BinaryHeap<Reverse<Waiting>>,
    queued_bytes: usize,
    seq: u64,
    /// When the last frame under the rate limit finishes leaving.
    busy_until_ns: u64,
}

impl Shaper {
    pub fn new(settings: Settings) -> Shaper {
        Shaper {
            rng: Rng::new(settings.seed),
            settings,
            stats: Stats::default(),
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            seq: 0,
            busy_until_ns: 0,
        }
    }

    /// Offer a frame at `now_ns`. Copies that must wait are kept; the answer is how many
    /// copies go now (0, 1 or 2).
    pub fn push(&mut self, now_ns: u64, frame: &[u8]) -> usize {
        self.stats.frames += 1;
        let s = &self.settings;
        let mut copies = 1;
        if self.rng.chance(s.dup) {
            copies = 2;
            self.stats.duplicated += 1;
        }
        if self.rng.chance(s.loss) {
            copies -= 1;
            self.stats.lost += 1;
        }
        if s.immediate() {
            self.stats.sent += copies as u64;
            return copies;
        }
        let mut now = 0;
        for _ in 0..copies {
            if self.queue.len() >= self.settings.limit {
                self.stats.dropped += 1;
                continue;
            }
            if self.rng.chance(self.settings.reorder) {
                self.stats.reordered += 1;
                self.stats.sent += 1;
                now += 1;
                continue;
            }
            let at = self.departure(now_ns, frame.len());
            self.seq += 1;
            self.queued_bytes += frame.len();
            self.queue.push(Reverse(Waiting {
                at_ns: at,
                seq: self.seq,
                frame: frame.to_vec(),
            }));
        }
        now
    }

    /// When a frame of `len` bytes offered at `now_ns` leaves.
    fn departure(&mut self, now_ns: u64, len: usize) -> u64 {
        let s = &self.settings;
        let mut delay = s.delay_ns as i128;
        if s.jitter_ns > 0 {
            let j = s.jitter_ns as i128;
            delay += (self.rng.next_u64() % (2 * j as u64 + 1)) as i128 - j;
        }
        let mut at = now_ns.saturating_add(delay.max(0) as u64);
        if s.rate_bps > 0 {
            // Frame length in bits over the rate, in nanoseconds.
            let tx = (len as u128 * 8 * 1_000_000_000 / u128::from(s.rate_bps)) as u64;
            at = at.max(self.busy_until_ns) + tx;
            self.busy_until_ns = at;
        }
        at
    }

    /// The next frame whose time has come, if any.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Vec<u8>> {
        if self.queue.peek()?.0.at_ns > now_ns {
            return None;
        }
        let w = self.queue.pop()?.0;
        self.queued_bytes -= w.frame.len();
        self.stats.sent += 1;
        Some(w.frame)
    }

    /// When the first waiting frame is due.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|w| w.0.at_ns)
    }

    /// Every waiting frame, in order, now (the impairment is being cleared or replaced).
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(w) = self.queue.pop() {
            out.push(w.0.frame);
        }
        self.stats.sent += out.len() as u64;
        self.queued_bytes = 0;
        out
    }

    /// Frames and bytes waiting.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_bytes)
    }

    /// One line of counters, for the console.
    pub fn stats_line(&self) -> String {
        let st = &self.stats;
        let (qf, qb) = self.queued();
        format!(
            "frames {} sent {} lost {} duplicated {} reordered {} dropped {} queued {} bytes {}",
            st.frames, st.sent, st.lost, st.duplicated, st.reordered, st.dropped, qf, qb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(opts: &str) -> Settings {
        let v: Vec<&str> = opts.split_whitespace().collect();
        Settings::parse(&v, 7).unwrap()
    }

    #[test]
    fn options_parse_and_print_back() {
        let s = set("delay=10 jitter=2.5ms loss=1% dup=0.5 reorder=25 rate=100 limit=50 seed=9");
        assert_eq!(s.delay_ns, 10_000_000);
        assert_eq!(s.jitter_ns, 2_500_000);
        assert!((s.loss - 0.01).abs() < 1e-12);
        assert!((s.dup - 0.005).abs() < 1e-12);
        assert!((s.reorder - 0.25).abs() < 1e-12);
        assert_eq!(s.rate_bps, 100_000_000);
        assert_eq!(s.limit, 50);
        assert_eq!(s.seed, 9);
        let again: Vec<String> = s.to_string().split(' ').map(String::from).collect();
        let again: Vec<&str> = again
            .iter()
            .map(String::as_str)
            .filter(|o| !o.ends_with("=none"))
            .collect();
        assert_eq!(Settings::parse(&again, 0).unwrap(), s);
        assert_eq!(set("rate=512kbit").rate_bps, 512_000);
        assert_eq!(set("rate=1gbit").rate_bps, 1_000_000_000);
        assert_eq!(set("delay=1s").delay_ns, 1_000_000_000);
        assert_eq!(set("loss=3").seed, 7, "the default seed");
    }

    #[test]
    fn bad_options_name_themselves() {
        for (o, what) in [
            ("loss=150", "loss"),
            ("loss=-1", "loss"),
            ("delay=abc", "delay"),
            ("delay=100000", "delay"),
            ("rate=0", "rate"),
            ("rate=1bit", "rate"),
            ("limit=0", "limit"),
            ("seed=x", "seed"),
            ("colour=red", "colour"),
            ("loss", "KEY=VALUE"),
            ("reorder=10", "reorder"),
        ] {
            let e = Settings::parse(&[o], 0).unwrap_err();
            assert!(e.contains(what), "{o}: {e}");
        }
        assert!(Settings::parse(&[], 0).is_err());
    }

    #[test]
    fn delay_holds_each_frame_for_its_time_in_order() {
        let mut sh = Shaper::new(set("delay=10"));
        assert_eq!(sh.push(0, b"a"), 0);
        assert_eq!(sh.push(1_000_000, b"b"), 0);
        assert_eq!(sh.next_due(), Some(10_000_000));
        assert_eq!(sh.pop_due(9_999_999), None);
        assert_eq!(sh.pop_due(10_000_000).as_deref(), Some(&b"a"[..]));
        assert_eq!(sh.pop_due(10_500_000), None);
        assert_eq!(sh.pop_due(11_000_000).as_deref(), Some(&b"b"[..]));
        assert_eq!(sh.stats.sent, 2);
        assert_eq!(sh.queued(), (0, 0));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_averages_the_delay() {
        let mut sh = Shaper::new(set("delay=10 jitter=4 seed=1 limit=20000"));
        let mut sum = 0u64;
        for i in 0..10_000u64 {
            sh.push(i * 10, b"x");
        }
        let mut n = 0;
        let mut prev_seq_order = true;
        let mut last = 0;
        while let Some(at) = sh.next_due() {
            assert!((6_000_000..=14_100_000).contains(&at), "{at}");
            prev_seq_order &= at >= last;
            last = at;
            sum += at;
            sh.pop_due(at).unwrap();
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert!(prev_seq_order);
        let mean_ms = (sum / n) as f64 / 1e6;
        assert!((9.9..10.2).contains(&mean_ms), "{mean_ms}");
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates_repeatably() {
        let run = |seed: u64| {
            let mut sh = Shaper::new(set(&format!("loss=5 dup=10 seed={seed}")));
            let sent: usize = (0..100_000).map(|_| sh.push(0, b"x")).sum();
            (sent, sh.stats)
        };
        let (sent, st) = run(42);
        assert_eq!(run(42).0, sent, "same seed, same decisions");
        assert_ne!(run(43).0, sent);
        let lost = st.lost as f64 / 1e5;
        let dup = st.duplicated as f64 / 1e5;
        assert!((0.045..0.055).contains(&lost), "{lost}");
        assert!((0.095..0.105).contains(&dup), "{dup}");
        assert_eq!(sent as u64, 100_000 + st.duplicated - st.lost);
        assert_eq!(st.sent, sent as u64);
    }

    #[test]
    fn rate_spaces_frames_by_their_transmission_time() {
        // 1 Mbit/s: a 1250-byte frame takes 10 ms.
        let mut sh = Shaper::new(set("rate=1"));
        let f = vec![0u8; 1250];
        for _ in 0..3 {
            sh.push(0, &f);
        }
        let mut times = Vec::new();
        while let Some(at) = sh.next_due() {
            times.push(at);
            sh.pop_due(at);
        }
        assert_eq!(times, vec![10_000_000, 20_000_000, 30_000_000]);
        // Idle since: the next frame starts when it comes, not where the last one ended.
        sh.push(100_000_000, &f);
        assert_eq!(sh.next_due(), Some(110_000_000));
    }

    #[test]
    fn the_queue_is_bounded_and_drops_are_counted() {
        let mut sh = Shaper::new(set("delay=5 limit=3"));
        for _ in 0..5 {
            sh.push(0, b"abc");
        }
        assert_eq!(sh.stats.dropped, 2);
        assert_eq!(sh.queued(), (3, 9));
        assert_eq!(sh.drain().len(), 3);
        assert_eq!(sh.queued(), (0, 0));
    }

    #[test]
    fn reordered_frames_skip_the_delay() {
        let mut sh = Shaper::new(set("delay=10 reorder=30 seed=5 limit=20000"));
        let now: usize = (0..10_000).map(|_| sh.push(0, b"x")).sum();
        assert_eq!(now as u64, sh.stats.reordered);
        let frac = now as f64 / 1e4;
        assert!((0.28..0.32).contains(&frac), "{frac}");
        assert_eq!(sh.queued().0, 10_000 - now);
    }
}
