//! A small checkpoint damaged at many points: truncated anywhere, or with a bit flipped
//! anywhere in its safetensors header. Each load either succeeds and generates exactly what
//! the undamaged model does, or fails with a clear error; none crashes or hangs.

mod common;

use std::sync::Arc;

use common::*;
use lmx::engine::{GenerateParams, Session};
use lmx::model::{LoadParams, Model};

fn greedy(dir: &std::path::Path) -> lmx::Result<Vec<u32>> {
    let m = Arc::new(Model::load(dir, &LoadParams::default())?);
    let prompt = m.encode("The keeper counted", true)?;
    let p = GenerateParams { max_tokens: 4, ignore_eos: true, ..Default::default() };
    Ok(Session::new(m)?.generate(&prompt, &p, |_| true)?.tokens)
}

/// A deterministic generator (xorshift), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check(case: &str, what: &str, r: lmx::Result<Vec<u32>>, want: &[u32]) {
    match r {
        Ok(tokens) => assert_eq!(tokens, want, "{case} {what}: loaded, but generates other tokens"),
        Err(e) => {
            assert!(!e.message.is_empty(), "{case} {what}: an error without a message");
            assert!(
                matches!(
                    e.kind,
                    lmx::ErrorKind::Format | lmx::ErrorKind::Unsupported | lmx::ErrorKind::NotFound
                ),
                "{case} {what}: {:?} {e}",
                e.kind
            );
        }
    }
}

#[test]
fn truncated_and_bit_flipped_weights_fail_cleanly_or_load_unchanged() {
    for case in ["qwen3", "llama_tied_q4"] {
        let want = greedy(&fixtures().join(case)).unwrap();
        let original = std::fs::read(fixtures().join(case).join("model.safetensors")).unwrap();
        let header_end = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        let t = copy_fixture(case, "faults");
        let path = t.0.join("model.safetensors");

        // Truncations: around the length prefix and the header's end, then across the data.
        let mut cuts: Vec<usize> =
            vec![0, 1, 7, 8, 9, header_end / 2, header_end - 1, header_end, header_end + 1];
        cuts.extend((1..24).map(|i| header_end + (original.len() - header_end) * i / 24));
        cuts.push(original.len() - 1);
        for cut in cuts {
            std::fs::write(&path, &original[..cut]).unwrap();
            let r = greedy(&t.0);
            assert!(r.is_err(), "{case}: a file cut at {cut} of {} bytes loaded", original.len());
            check(case, &format!("cut at {cut}"), r, &want);
        }

        // Bit flips in the length prefix and the header JSON, one at a time.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..120 {
            let at = (rng.next() % header_end as u64) as usize;
            let bit = rng.next() % 8;
            let mut damaged = original.clone();
            damaged[at] ^= 1 << bit;
            std::fs::write(&path, &damaged).unwrap();
            check(case, &format!("bit {bit} of byte {at} flipped"), greedy(&t.0), &want);
        }
    }
}
