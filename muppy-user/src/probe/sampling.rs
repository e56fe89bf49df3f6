//! Byte-weighted sampling (`--sample-bytes`): the gaps between samples the probes draw from,
//! and the maps that hold them.

use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
};
use muppy_common::{INTERVALS, names::map};

use super::{ProbeError, loader::map_err};

/// The sampling gaps: [`INTERVALS`] quantiles of the exponential distribution with mean
/// `mean` bytes (at the midpoints of equal-probability slices), scaled so that their mean is
/// exactly `mean`. A uniformly random entry is then an exponential gap, which makes the
/// samples a Poisson process over the bytes allocated.
pub fn sampling_gaps(mean: u64) -> Vec<u64> {
    let n = f64::from(INTERVALS);
    let raw: Vec<f64> = (0..INTERVALS)
        .map(|i| -(1.0 - (f64::from(i) + 0.5) / n).ln())
        .collect();
    let scale = mean as f64 * n / raw.iter().sum::<f64>();
    raw.iter()
        .map(|q| {
            // At most ln(2n) ≈ 9 times the mean: far inside u64.
            #[expect(clippy::cast_possible_truncation, reason = "bounded above")]
            let gap = (q * scale).round() as u64;
            gap.max(1)
        })
        .collect()
}

/// Writes the sampling gaps and each CPU's first countdown.
pub(super) fn fill_sampling_maps(
    ebpf: &mut Ebpf,
    sample_bytes: u64,
    cpus: usize,
) -> Result<(), ProbeError> {
    let mut gaps: Array<_, u64> = ebpf
        .map_mut(map::SAMPLE_GAPS)
        .ok_or(ProbeError::MissingMap {
            name: map::SAMPLE_GAPS,
        })?
        .try_into()
        .map_err(|e| map_err(map::SAMPLE_GAPS, e))?;
    let all = sampling_gaps(sample_bytes);
    for (i, gap) in (0u32..).zip(&all) {
        gaps.set(i, *gap, 0)
            .map_err(|e| map_err(map::SAMPLE_GAPS, e))?;
    }
    // Each CPU starts a random gap away from its first sample, not at zero (which would sample
    // every CPU's first allocation whatever its size).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos().into())
        | 1;
    let starts: Vec<i64> = (0..cpus)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let gap = all[usize::try_from(seed % u64::from(INTERVALS)).unwrap_or(0)];
            i64::try_from(gap).unwrap_or(i64::MAX)
        })
        .collect();
    let mut countdown: PerCpuArray<_, i64> = ebpf
        .map_mut(map::COUNTDOWN)
        .ok_or(ProbeError::MissingMap {
            name: map::COUNTDOWN,
        })?
        .try_into()
        .map_err(|e| map_err(map::COUNTDOWN, e))?;
    let values =
        aya::maps::PerCpuValues::try_from(starts).map_err(|source| ProbeError::PerCpu {
            name: map::COUNTDOWN,
            source,
        })?;
    countdown
        .set(0, values, 0)
        .map_err(|e| map_err(map::COUNTDOWN, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_gaps_average_the_mean_and_look_exponential() {
        let gaps = sampling_gaps(1024);
        assert_eq!(gaps.len(), INTERVALS as usize);
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        assert!((mean - 1024.0).abs() < 1.0, "{mean}");
        // Exponential: about 63% of gaps are below the mean, the median is ln 2 of it.
        let below = gaps.iter().filter(|&&g| g < 1024).count() as f64 / gaps.len() as f64;
        assert!((below - 0.632).abs() < 0.01, "{below}");
        assert!((gaps[gaps.len() / 2] as f64 / 1024.0 - 0.693).abs() < 0.01);
    }
}
