//! MLX's memory counters. A test binary of its own: the counters are process-wide, and tests
//! in one binary run on parallel threads.

use lmx::mlx::{memory, ops, Dtype};

#[test]
fn memory_functions_report_and_restore() {
    let prev = memory::set_cache_limit(1 << 20).unwrap();
    assert_eq!(memory::set_cache_limit(prev).unwrap(), 1 << 20);
    let limit = memory::memory_limit().unwrap();
    assert!(limit > 0);
    let a = ops::zeros(&[1024, 1024], Dtype::F32).unwrap();
    a.eval().unwrap();
    assert!(memory::active_memory().unwrap() >= 4 << 20);
    assert!(memory::peak_memory().unwrap() >= memory::active_memory().unwrap());
    drop(a);
    memory::clear_cache().unwrap();
    assert_eq!(memory::cache_memory().unwrap(), 0);
}
