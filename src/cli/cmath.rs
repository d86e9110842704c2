//! The two C math functions the executable calls, `pow` (indicatif's rate estimate) and `log2`
//! (convert's entropy test), defined here from the `libm` crate so that the loader need not
//! map glibc's libm.so.6 for them.
//!
//! Why: a first command after boot reads every library it loads from disk, and readahead
//! takes all of libm's 0.9 MB for two functions: `ferry mount` → first read paid 0.8 ms more
//! than the kernel's mount, which loads no libm (issue 19; a warm start barely notices). A
//! definition in the executable resolves the references at link time, and `--as-needed` then
//! leaves `-lm` out. The tests check that the executable needs no library besides libc.
#![allow(unsafe_code)] // `no_mangle`: these are the C symbols `pow` and `log2`, with C's signatures.

/// C's `double pow(double, double)`. `libm::pow` is musl's, accurate to within an ulp.
// SAFETY: the name and signature are C's; nothing else in the program defines `pow`.
#[unsafe(no_mangle)]
extern "C" fn pow(x: f64, y: f64) -> f64 {
    ::libm::pow(x, y)
}

/// C's `double log2(double)`.
// SAFETY: the name and signature are C's; nothing else in the program defines `log2`.
#[unsafe(no_mangle)]
extern "C" fn log2(x: f64) -> f64 {
    ::libm::log2(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn c_math_symbols_compute() {
        // The calls Rust emits for powf and log2 are the symbols above.
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert!(
            (std::hint::black_box(2.0f64).powf(std::hint::black_box(0.5)) - 2f64.sqrt()).abs()
                < 1e-15
        );
        assert_eq!(super::log2(8.0), 3.0);
        assert!(
            (std::hint::black_box(65536.0f64 * 3.0).log2() - (16.0 + 3f64.log2())).abs() < 1e-12
        );
        assert!(super::log2(-1.0).is_nan());
    }
}
