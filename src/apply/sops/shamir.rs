//! Shamir secret sharing as SOPS splits a data key across key groups (HashiCorp's `shamir`
//! package): each share is one byte per secret byte plus its x coordinate as the last byte, and
//! the secret is the sharing polynomial at x = 0, over GF(2⁸) with the AES polynomial.

/// The secret the shares agree on. Shares must number at least two, have one length, and
/// distinct x coordinates; any `threshold` shares of a split give the same secret.
pub fn combine<S: AsRef<[u8]>>(shares: &[S]) -> Result<Vec<u8>, String> {
    let shares: Vec<&[u8]> = shares.iter().map(AsRef::as_ref).collect();
    if shares.len() < 2 {
        return Err("less than two parts cannot be used to reconstruct the secret".into());
    }
    let width = shares[0].len();
    if width < 2 {
        return Err("parts must be at least two bytes".into());
    }
    if shares.iter().any(|s| s.len() != width) {
        return Err("all parts must be the same length".into());
    }
    let xs: Vec<u8> = shares.iter().map(|s| s[width - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return Err("duplicate part detected".into());
        }
    }
    let weights = lagrange_weights_at_zero(&xs)?;
    Ok((0..width - 1)
        .map(|byte| {
            shares
                .iter()
                .zip(&weights)
                .fold(0, |sum, (share, weight)| sum ^ mul(share[byte], *weight))
        })
        .collect())
}

/// For each sample i, ∏_{j≠i} x_j / (x_i − x_j): subtraction is XOR in GF(2⁸), and the
/// interpolation point is 0, so the numerator is x_j.
fn lagrange_weights_at_zero(xs: &[u8]) -> Result<Vec<u8>, String> {
    xs.iter()
        .enumerate()
        .map(|(i, xi)| {
            xs.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .try_fold(1u8, |basis, (_, xj)| {
                    let term = div(*xj, xi ^ xj).ok_or("duplicate part detected")?;
                    Ok(mul(basis, term))
                })
        })
        .collect()
}

/// Multiplication in GF(2⁸) modulo x⁸ + x⁴ + x³ + x + 1, without data-dependent branches.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (carry & 0x1b);
        b >>= 1;
    }
    product
}

/// a / b; `None` when b is 0. The inverse of b is b²⁵⁴.
fn div(a: u8, b: u8) -> Option<u8> {
    if b == 0 {
        return None;
    }
    let mut inverse = 1u8;
    let mut power = b;
    let mut exponent = 254u8;
    while exponent > 0 {
        if exponent & 1 == 1 {
            inverse = mul(inverse, power);
        }
        power = mul(power, power);
        exponent >>= 1;
    }
    Some(mul(a, inverse))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares of a polynomial chosen here: f(x) = s + c1·x (+ c2·x²) per byte.
    fn split(secret: &[u8], coefficients: &[&[u8]], xs: &[u8]) -> Vec<Vec<u8>> {
        xs.iter()
            .map(|&x| {
                let mut share: Vec<u8> = secret
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut y = *s;
                        let mut power = 1u8;
                        for c in coefficients {
                            power = mul(power, x);
                            y ^= mul(c[i], power);
                        }
                        y
                    })
                    .collect();
                share.push(x);
                share
            })
            .collect()
    }

    #[test]
    fn field_arithmetic_matches_the_aes_field() {
        // FIPS-197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        for b in 1..=255u8 {
            assert_eq!(mul(b, div(1, b).unwrap()), 1, "inverse of {b}");
        }
        assert_eq!(div(7, 0), None);
    }

    #[test]
    fn any_threshold_of_the_shares_gives_the_secret() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let c1 = [0x3a; 32];
        let c2: Vec<u8> = (0..32).map(|i| i * 7 + 1).collect();
        let shares = split(secret, &[&c1, &c2], &[9, 200, 77, 1]);
        assert_eq!(combine(&shares[..3]).unwrap(), secret);
        assert_eq!(combine(&shares[1..]).unwrap(), secret);
        assert_eq!(combine(&shares).unwrap(), secret);
        // Two shares of a degree-2 polynomial are not enough: the result is some other key.
        assert_ne!(combine(&shares[..2]).unwrap(), secret);
    }

    #[test]
    fn malformed_shares_are_refused() {
        let shares = split(b"ab", &[b"cd"], &[3, 4]);
        assert!(combine(&shares[..1]).is_err());
        assert!(combine(&[shares[0].clone(), shares[0].clone()]).is_err());
        assert!(combine(&[shares[0].clone(), vec![1, 2]]).is_err());
        assert!(combine(&[vec![1], vec![2]]).is_err());
    }
}
