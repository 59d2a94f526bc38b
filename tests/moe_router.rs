//! MoE routers against transformers' own: the DeepSeek-V3 router kind (sigmoid scores, a
//! correction bias for the choice only, group-limited top-k, renormalisation and scaling),
//! whose expected choices and weights `scripts/moe_router_ref.py` prints from transformers
//! 5.23's `DeepseekV3TopkRouter` on inputs made by the same formulas as here.

use lmx::mlx::{ops, Array, Dtype};
use lmx::model::arch::spec::{GroupScore, Routing, Scoring};
use lmx::model::nn::linear::Linear;
use lmx::model::nn::moe::Router;

const T: usize = 6;
const H: usize = 8;
const E: usize = 16;
const K: usize = 4;

fn x_at(t: usize, h: usize) -> f32 {
    let (t, h) = (t as f64, h as f64);
    (0.37 * t + 0.11 * h + 0.5 * t * h / H as f64).sin() as f32
}

fn w_at(e: usize, h: usize) -> f32 {
    let (e, h) = (e as f64, h as f64);
    (0.8 * (0.23 * e * e - 0.41 * h + 0.07 * e * h).cos()) as f32
}

fn bias_at(e: usize) -> f32 {
    (0.03 * ((e * 7) % 5) as f64 - 0.05) as f32
}

// From scripts/moe_router_ref.py. Margins there: the kept groups' scores 0.0103 above the
// dropped ones', the chosen experts 0.0418 above the other kept ones; on all six tokens the
// group limit excludes an expert that outscores a chosen one, so the limit is exercised; the
// correction bias changes the experts of tokens 0 and 3.
const EXPERTS: [[u32; K]; T] =
    [[2, 3, 5, 7], [5, 7, 9, 10], [1, 2, 5, 7], [1, 2, 5, 7], [0, 1, 2, 5], [0, 1, 13, 14]];
const WEIGHTS: [[f32; K]; T] = [
    [0.6705147, 0.5694096, 0.63756275, 0.6225129],
    [0.63845485, 0.61902696, 0.6366736, 0.6058444],
    [0.5965116, 0.6458708, 0.6406872, 0.61693054],
    [0.63392484, 0.6486306, 0.6413862, 0.5760584],
    [0.6680533, 0.6650735, 0.58049035, 0.58638287],
    [0.7321435, 0.67872846, 0.5938483, 0.49527976],
];

fn router(routing: Routing, bias: Option<Array>) -> Router {
    let w: Vec<f32> = (0..E).flat_map(|e| (0..H).map(move |h| w_at(e, h))).collect();
    let w = Array::from_slice(&w, &[E as i32, H as i32]).unwrap();
    let gate = Linear::Dense { wt: ops::transpose(&w, &[1, 0]).unwrap(), bias: None };
    Router::new(gate, routing, K as i32, bias).unwrap()
}

/// Each token's experts ascending with their weights in the same order.
fn sorted(choice: &lmx::model::nn::moe::Choice) -> (Vec<u32>, Vec<f32>) {
    let order = ops::argsort(&choice.experts, -1).unwrap();
    let e = ops::take_along_axis(&choice.experts, &order, -1).unwrap();
    let w = ops::take_along_axis(&choice.weights, &order, -1).unwrap();
    (
        ops::astype(&e, Dtype::U32).unwrap().to_vec::<u32>().unwrap(),
        ops::astype(&w, Dtype::F32).unwrap().to_f32_vec().unwrap(),
    )
}

#[test]
fn grouped_sigmoid_router_equals_deepseek_v3s() {
    let bias: Vec<f32> = (0..E).map(bias_at).collect();
    let bias = Array::from_slice(&bias, &[E as i32]).unwrap();
    let r = router(
        Routing::Grouped {
            scoring: Scoring::Sigmoid,
            correction_bias: true,
            groups: 4,
            keep_groups: 2,
            group_score: GroupScore::TopTwoSum,
            renormalize: true,
            scale: 2.5,
        },
        Some(bias),
    );
    let x: Vec<f32> = (0..T).flat_map(|t| (0..H).map(move |h| x_at(t, h))).collect();
    // [1, T, hidden], as a transformer layer hands it over.
    let x = Array::from_slice(&x, &[1, T as i32, H as i32]).unwrap();
    let (experts, weights) = sorted(&r.route(&x).unwrap());
    assert_eq!(experts, EXPERTS.concat(), "experts");
    let want = WEIGHTS.concat();
    let d = weights.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d <= 1e-6, "weights differ from transformers' by {d}: {weights:?}");
    // The weights sum to the scaling factor after renormalisation.
    for row in weights.chunks(K) {
        assert!((row.iter().sum::<f32>() - 2.5).abs() < 1e-5, "{row:?}");
    }
}

#[test]
fn routers_are_refused_without_or_with_a_stray_correction_bias() {
    let bias = Array::from_slice(&[0f32; E], &[E as i32]).unwrap();
    let gate = Linear::Dense { wt: ops::zeros(&[H as i32, E as i32], Dtype::F32).unwrap(), bias: None };
    let grouped = Routing::Grouped {
        scoring: Scoring::Sigmoid,
        correction_bias: true,
        groups: 4,
        keep_groups: 2,
        group_score: GroupScore::TopTwoSum,
        renormalize: true,
        scale: 1.0,
    };
    assert!(Router::new(gate.clone(), grouped, 2, None).is_err());
    assert!(Router::new(gate.clone(), Routing::SoftmaxTopK { renormalize: false }, 2, Some(bias)).is_err());
}
