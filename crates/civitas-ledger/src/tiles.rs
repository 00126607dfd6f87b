//! C2SP tlog-tiles paths: `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, where N is
//! written in groups of three digits, every group but the last prefixed with `x`.
//!
//! Written here rather than taken from `tlog_tiles`: that crate's 0.2 paths follow Go's
//! sumdb layout, which puts the tile height in the path (`tile/8/0/...`); C2SP does not.

/// Hashes or entries per full tile.
pub const TILE_WIDTH: u32 = 256;

/// A tile named by a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef {
    /// Tile level for hash tiles; `None` for entry bundles.
    pub level: Option<u8>,
    /// Tile index at that level.
    pub n: u64,
    /// Number of hashes or entries: 256 for a full tile, fewer for a partial one.
    pub width: u32,
}

impl TileRef {
    /// Parses the part of a path after `tile/`; only the canonical form is accepted.
    pub fn parse(path: &str) -> Option<TileRef> {
        let (kind, rest) = path.split_once('/')?;
        let level = match kind {
            "entries" => None,
            l => {
                let level: u8 = l.parse().ok()?;
                (level <= 63 && l == level.to_string()).then_some(Some(level))?
            }
        };
        let (n_path, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let width: u32 = w.parse().ok()?;
                ((1..TILE_WIDTH).contains(&width) && w == width.to_string())
                    .then_some((n, width))?
            }
            None => (rest, TILE_WIDTH),
        };
        let groups: Vec<&str> = n_path.split('/').collect();
        let mut n: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let digits = if i + 1 < groups.len() {
                g.strip_prefix('x')?
            } else {
                g
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n = n.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
        }
        let tile = TileRef { level, n, width };
        (tile.path() == path).then_some(tile)
    }

    /// The path after `tile/`.
    pub fn path(&self) -> String {
        let mut groups = Vec::new();
        let mut n = self.n;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let digits: Vec<String> = groups
            .iter()
            .rev()
            .enumerate()
            .map(|(i, g)| {
                if i + 1 < groups.len() {
                    format!("x{g:03}")
                } else {
                    format!("{g:03}")
                }
            })
            .collect();
        let kind = self
            .level
            .map_or_else(|| "entries".to_string(), |l| l.to_string());
        let partial = if self.width == TILE_WIDTH {
            String::new()
        } else {
            format!(".p/{}", self.width)
        };
        format!("{kind}/{}{partial}", digits.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_in_the_c2sp_form() {
        let cases = [
            (
                "0/000",
                TileRef {
                    level: Some(0),
                    n: 0,
                    width: 256,
                },
            ),
            (
                "1/x001/x234/067",
                TileRef {
                    level: Some(1),
                    n: 1_234_067,
                    width: 256,
                },
            ),
            (
                "entries/x001/234.p/7",
                TileRef {
                    level: None,
                    n: 1234,
                    width: 7,
                },
            ),
            (
                "2/999.p/255",
                TileRef {
                    level: Some(2),
                    n: 999,
                    width: 255,
                },
            ),
        ];
        for (path, tile) in cases {
            assert_eq!(TileRef::parse(path), Some(tile), "{path}");
            assert_eq!(tile.path(), path);
        }
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for bad in [
            "0/0",
            "0/x000/001",
            "0/1234",
            "01/000",
            "0/000.p/256",
            "0/000.p/0",
            "0/000.p/07",
            "x/000",
            "0/x001",
            "entries/abc",
        ] {
            assert_eq!(TileRef::parse(bad), None, "{bad}");
        }
    }
}
