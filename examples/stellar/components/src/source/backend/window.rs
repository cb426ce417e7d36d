//! How many objects a stream keeps in flight from S3 or GCS. A fixed `PREFETCH_OBJECTS` is
//! kept as given; by default the window adapts: it starts at
//! [`ADAPTIVE_START`](crate::source::config::ADAPTIVE_START) and doubles after every
//! window's worth of objects handed over for as long as that raises the objects per second by
//! at least a tenth, never past [`MAX_OBJECTS`] nor past [`MAX_BYTES`] of objects (at the
//! average size seen so far) held by the stream at once. A server or link that is the limit
//! stops the growth within a few windows; a slow reader does too (the rate is what it takes).

use std::time::{Duration, Instant};

use crate::source::config::Prefetch;

/// Objects in flight at most.
pub const MAX_OBJECTS: usize = 512;
/// Bytes the objects in flight may hold at most (at the average object size seen).
pub const MAX_BYTES: usize = 256 << 20;
/// How much faster a wider window must be to be kept growing.
const GAIN: f64 = 1.1;

/// The window of one prefetch task.
#[derive(Debug)]
pub struct Window {
    size: usize,
    adapts: bool,
    /// Objects handed over and their bytes, in all.
    objects: u64,
    bytes: u64,
    /// The current epoch: since when, and objects handed over in it.
    epoch_began: Option<Instant>,
    epoch_objects: usize,
    /// The best rate of a finished epoch (objects per second).
    best: f64,
}

impl Window {
    pub fn new(prefetch: Prefetch) -> Window {
        Window {
            size: prefetch.objects.max(1),
            adapts: prefetch.adapts,
            objects: 0,
            bytes: 0,
            epoch_began: None,
            epoch_objects: 0,
            best: 0.0,
        }
    }

    /// Objects to keep in flight now.
    pub fn size(&self) -> usize {
        self.size
    }

    /// An object of `bytes` was handed over at `now`; returns the window from now on.
    pub fn handed_over(&mut self, bytes: usize, now: Instant) -> usize {
        self.objects += 1;
        self.bytes += bytes as u64;
        if !self.adapts {
            return self.size;
        }
        // Never more bytes in flight than the bound, at the sizes seen so far.
        self.size = self.size.min(self.cap());
        let Some(began) = self.epoch_began else {
            // The first object's wait is the connection's start-up, not the window's rate.
            self.epoch_began = Some(now);
            return self.size;
        };
        self.epoch_objects += 1;
        if self.epoch_objects < self.size {
            return self.size;
        }
        let elapsed = now.duration_since(began).max(Duration::from_micros(1));
        let rate = self.epoch_objects as f64 / elapsed.as_secs_f64();
        let wider = (self.size * 2).min(self.cap());
        if rate >= self.best * GAIN && wider > self.size {
            self.best = rate;
            self.size = wider;
        } else {
            // No gain from the last widening (or no room): stay, and stop trying.
            self.best = self.best.max(rate);
            self.adapts = false;
        }
        self.epoch_began = Some(now);
        self.epoch_objects = 0;
        self.size
    }

    /// The widest window the byte bound allows at the average object size seen.
    fn cap(&self) -> usize {
        let average = (self.bytes / self.objects.max(1)).max(1) as usize;
        (MAX_BYTES / average).clamp(1, MAX_OBJECTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::ADAPTIVE_START as START;

    /// Feeds `window` objects of `bytes`, each epoch taking `epoch_time(size)`.
    fn run(
        window: &mut Window,
        bytes: usize,
        epochs: usize,
        epoch_time: impl Fn(usize) -> Duration,
    ) {
        let mut now = Instant::now();
        window.handed_over(bytes, now);
        for _ in 0..epochs {
            let size = window.size();
            let step = epoch_time(size) / size as u32;
            for _ in 0..size {
                now += step;
                window.handed_over(bytes, now);
            }
        }
    }

    #[test]
    fn a_window_grows_while_it_pays_and_stops_at_the_servers_ceiling() {
        // Latency-bound up to 128 in flight (time per epoch constant), flat beyond.
        let mut window = Window::new(Prefetch::adaptive());
        run(&mut window, 100_000, 12, |size| {
            Duration::from_millis(100) * (size.max(128) as u32) / 128
        });
        assert_eq!(
            window.size(),
            256,
            "one widening past the ceiling, then it stays"
        );
    }

    #[test]
    fn a_slow_reader_keeps_the_window_where_it_started() {
        // The rate is the reader's whatever the window: no widening pays.
        let mut window = Window::new(Prefetch::adaptive());
        run(&mut window, 100_000, 6, |size| {
            Duration::from_millis(10) * size as u32
        });
        assert_eq!(window.size(), START * 2);
    }

    #[test]
    fn the_byte_bound_caps_the_window_for_large_objects() {
        let mut window = Window::new(Prefetch::adaptive());
        // 8 MiB objects: 256 MiB hold 32 of them, half the start.
        run(&mut window, 8 << 20, 6, |_| Duration::from_millis(100));
        assert_eq!(window.size(), 32);
    }

    #[test]
    fn a_fixed_setting_never_moves() {
        let mut window = Window::new(Prefetch::fixed(3));
        run(&mut window, 1000, 6, |_| Duration::from_millis(1));
        assert_eq!(window.size(), 3);
    }
}
