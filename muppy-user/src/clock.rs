//! The probes' timestamps, turned into `CLOCK_MONOTONIC` nanoseconds.
//!
//! An allocation's probe stamps it with the kernel's tick count (`jiffies`), which the BPF
//! JIT reads inline: the nanosecond clock is a helper call that cost ≈30 ns per allocation
//! here, a sixth of the probes' whole work. A tick is 1/`CONFIG_HZ` s (4 ms at HZ=250). An
//! event stamped with tick `j` is dated to the end of that tick, the latest moment it can have
//! happened, so an age is never overstated and is short by less than a tick. Where the tick
//! rate cannot be learnt, the probes fall back to the nanosecond clock ([`Ticks::read`] gives
//! `None` and the probes are told so).

use std::{fs, io::Read as _};

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock blocks are stamped in, and the probes'
/// `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Tick rates Linux can be built with.
const RATES: [u64; 4] = [100, 250, 300, 1000];

/// `INITIAL_JIFFIES` is -300 s worth of ticks as a 32-bit number: the counter wraps five
/// minutes after boot, so that wrap bugs show early.
const WRAP_SECONDS: u64 = 300;

/// The tick rate, and a tick count with the latest monotonic time its tick can have begun
/// at: enough to turn any tick count into nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks {
    /// Ticks per second (`CONFIG_HZ`).
    pub hz: u64,
    jiffies: u64,
    start_ns: u64,
}

impl Ticks {
    /// Learns the rate from the kernel's configuration (`/proc/config.gz` or
    /// `/boot/config-RELEASE`), else from the tick count since boot, and catches a tick as it
    /// begins in `/proc/timer_list` (reading it for up to 20 ticks, until two reads close
    /// together see one begin). `None` if either cannot be learnt.
    pub fn read() -> Option<Ticks> {
        let read = || parse_timer_list(&fs::read_to_string("/proc/timer_list").ok()?);
        let (mut before_ns, mut before) = read()?;
        let hz = kernel_config()
            .as_deref()
            .and_then(hz_from_config)
            .or_else(|| hz_from_uptime(before_ns, before))?;
        let per_tick = 1_000_000_000 / hz;
        let deadline = before_ns + 20 * per_tick;
        while before_ns < deadline {
            let (ns, jiffies) = read()?;
            // The tick began after the previous read started and before this one read the
            // count; the count is read after the time, so by `ns` + the read's length. Only
            // two reads close together say when: a read stretched by a preemption (a busy
            // machine) leaves the moment open by as long, so the edge is caught again.
            if jiffies != before && ns - before_ns <= per_tick / 8 {
                let start_ns = ns + (ns - before_ns);
                return Some(Ticks {
                    hz,
                    jiffies,
                    start_ns,
                });
            }
            (before_ns, before) = (ns, jiffies);
        }
        None
    }

    /// Nanoseconds per tick: how much an age can fall short.
    pub fn resolution_ns(&self) -> u64 {
        1_000_000_000 / self.hz
    }

    /// The latest monotonic nanosecond an event stamped with tick count `jiffies` can have
    /// happened at: the end of that tick.
    pub fn ns(&self, jiffies: u64) -> u64 {
        let per_tick = self.resolution_ns();
        let end = jiffies + 1;
        if end >= self.jiffies {
            self.start_ns + (end - self.jiffies) * per_tick
        } else {
            self.start_ns
                .saturating_sub((self.jiffies - end) * per_tick)
        }
    }
}

/// `(now in ns, jiffies)` from the text of `/proc/timer_list`.
fn parse_timer_list(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:")?.trim().parse().ok())?;
    Some((now, jiffies))
}

fn kernel_config() -> Option<String> {
    if let Ok(gz) = fs::read("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

fn hz_from_config(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ=")?.parse().ok())
}

/// The tick rate from how far the counter has come since boot, `now_ns` ago: it started at
/// 2^32 - 300 × HZ. Needs the boot to be well over five minutes old to tell rates apart.
fn hz_from_uptime(now_ns: u64, jiffies: u64) -> Option<u64> {
    let secs = now_ns as f64 / 1e9;
    if secs < 2.0 * WRAP_SECONDS as f64 {
        return None;
    }
    let since_wrap = jiffies.checked_sub(1 << 32)? as f64;
    let rate = since_wrap / (secs - WRAP_SECONDS as f64);
    RATES
        .into_iter()
        .find(|&r| (rate - r as f64).abs() < r as f64 * 0.02)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 16795788955268 nsecs\n\ncpu: 0\n  .last_jiffies   : 4299091182\njiffies: 4299093202\n";

    #[test]
    fn reads_the_reference_point() {
        assert_eq!(
            parse_timer_list(LIST),
            Some((16_795_788_955_268, 4_299_093_202))
        );
        assert_eq!(parse_timer_list("now at x nsecs\n"), None);
    }

    #[test]
    fn learns_the_rate() {
        assert_eq!(
            hz_from_config("# CONFIG_HZ_100 is not set\nCONFIG_HZ=250\n"),
            Some(250)
        );
        // The machine above: 4.1 M ticks in the 16,496 s since the counter wrapped.
        assert_eq!(hz_from_uptime(16_795_788_955_268, 4_299_093_202), Some(250));
        assert_eq!(hz_from_uptime(100_000_000_000, 4_294_967_296), None);
    }

    #[test]
    fn dates_each_tick_to_its_end() {
        let t = Ticks {
            hz: 250,
            jiffies: 1000,
            start_ns: 10_000_000_000,
        };
        assert_eq!(t.resolution_ns(), 4_000_000);
        assert_eq!(t.ns(1000), 10_004_000_000);
        assert_eq!(t.ns(1249), 11_000_000_000);
        assert_eq!(t.ns(749), 9_000_000_000);
        assert_eq!(t.ns(0), 6_004_000_000);
    }

    #[test]
    fn catches_a_tick_on_this_machine() {
        // Where /proc/timer_list can be read (root), the clock works and agrees with ours.
        let Some(t) = Ticks::read() else { return };
        // A read of its own that no preemption stretched: its time and count are of one moment.
        let (now, jiffies) = (0..100)
            .find_map(|_| {
                let started = std::time::Instant::now();
                let list = fs::read_to_string("/proc/timer_list").unwrap();
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                (took <= t.resolution_ns() / 8).then(|| parse_timer_list(&list).unwrap())
            })
            .expect("a quick read of /proc/timer_list");
        let end = t.ns(jiffies);
        assert!(end + t.resolution_ns() >= now && end <= now + 2 * t.resolution_ns());
    }
}
