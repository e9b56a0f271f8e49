//! Cheap per-thread randomness for load balancing (not for anything secret).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded by the OS once per process and varies per instance.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

/// A uniformly distributed value in `0..n`; `0` when `n` is 0.
pub(crate) fn below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let x = STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // Multiply-shift maps 64 random bits onto 0..n with negligible bias for small n.
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_below_and_covers_the_range() {
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            let v = super::below(4);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
        assert_eq!(super::below(0), 0);
    }
}
