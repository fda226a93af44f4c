"""Chest-radiograph-like phantom images with planted findings and exact pixel masks.

Geometry is written in *normalised units*: the image spans ``[-1, 1]`` along x (columns, left to
right) and y (rows, top to bottom); at the nominal 40 cm field of view one unit is 20 cm
(:data:`CM` units per centimetre). Everything is vectorised numpy on coordinate grids, so the
same case renders at any size.

Radiological convention, used throughout: the **patient's right is on the image left** (x < 0)
and the patient's left on the image right (x > 0). A left-sided finding therefore lies in the
image's right half, and the heart bulges to the image right. Bright = dense, as a radiograph is
displayed (MONOCHROME2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from radalign.encoders.labels import CHEXPERT_LABELS

CM = 0.05  # normalised units per centimetre (2 units = 40 cm field of view)

# Sign of x for each patient side (radiological convention: patient right = image left).
SIDE_SIGN = {"right": -1.0, "left": 1.0}


# Disease findings that can be planted (Support Devices is not a disease: it may co-occur with
# No Finding, as in CheXpert).
DISEASES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumothorax",
)
PLANTABLE: tuple[str, ...] = (*DISEASES, "Support Devices")

# Probability of a normal (No Finding) study, and per-disease draw probabilities for the
# abnormal ones (independent draws, redrawn when empty). Resulting prevalences: about 30% No
# Finding, 13-22% for each disease, about 25% Lung Opacity (plain opacity or consolidation).
P_NORMAL = 0.30
P_DISEASE = {
    "Cardiomegaly": 0.22,
    "Pleural Effusion": 0.24,
    "Consolidation": 0.18,
    "Lung Opacity": 0.14,
    "Pneumothorax": 0.16,
    "Edema": 0.17,
    "Atelectasis": 0.18,
    "Lung Lesion": 0.18,
}
P_AP = 0.35
P_DEVICES = {"AP": 0.40, "PA": 0.08}
DEVICE_KINDS = ("et_tube", "central_line", "pacemaker", "enteric_tube")

ZONES = ("upper", "middle", "lower")
NORMAL_CTR = (0.39, 0.47)  # PA-equivalent cardiothoracic ratio of a normal heart
ENLARGED_CTR = (0.57, 0.67)
MAX_DISPLAYED_CTR = 0.72
AP_MAGNIFICATION = 1.15


@dataclass
class Finding:
    """One planted finding. ``laterality`` is the patient's side (left/right/bilateral)."""

    name: str
    laterality: str | None = None
    zone: str | None = None  # upper / middle / lower (lung zones) where applicable
    size: str | None = None  # small/moderate/large, mild/moderate/severe, nodule/mass words
    size_cm: float | None = None
    kind: str | None = None  # nodule/mass, device kind, "pneumonia" for infective consolidation
    uncertain: bool = False  # the report hedges ("possible ...")
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Anatomy:
    """Random patient anatomy and acquisition settings for one frontal image."""

    view: str  # "PA" or "AP"
    tilt: float  # radians, image rotation
    zoom: float
    dx: float
    dy: float
    body_w: float  # half-width of the trunk
    lung_in: float  # |x| of the medial lung edges
    lung_out: float  # |x| of the lateral lung edges (inner rib margin)
    lung_top: float  # y of the apices
    dome: tuple[float, float]  # y of the (right, left) hemidiaphragm peaks
    ctr: float  # displayed cardiothoracic ratio
    heart_h: float  # half-height of the heart
    soft: float  # soft-tissue grey level
    lung: float  # aerated-lung grey level
    dense: float  # grey level of dense opacities / heart
    contrast: float
    brightness: float
    gamma: float
    noise: float  # sigma of white noise
    lowfreq: float  # amplitude of low-frequency exposure variation

    def side_dome(self, s: float) -> float:
        return self.dome[0] if s < 0 else self.dome[1]


@dataclass
class Rendered:
    image: np.ndarray  # float32 [0, 1]
    masks: dict[str, np.ndarray]  # finding name -> bool
    anatomy: dict[str, np.ndarray]  # "body", "lungs", "heart" -> bool
    ctr: float


# ----------------------------------------------------------------------------------------------
# sampling


def sample_anatomy(rng: np.random.Generator, view: str | None = None) -> Anatomy:
    """Draw a random anatomy; ``view`` is "PA", "AP" or None (random)."""
    if view is None:
        view = "AP" if rng.random() < P_AP else "PA"
    ap = view == "AP"
    u = rng.uniform
    dome_r = u(0.36, 0.48) - (0.06 if ap else 0.0)
    return Anatomy(
        view=view,
        tilt=math.radians(u(-4.0, 4.0) if ap else u(-2.5, 2.5)),
        zoom=u(0.94, 1.06),
        dx=u(-0.04, 0.04),
        dy=u(-0.04, 0.04),
        body_w=u(0.88, 0.98),
        lung_in=u(0.07, 0.10),
        lung_out=u(0.72, 0.82),
        lung_top=u(-0.80, -0.70),
        dome=(dome_r, dome_r + u(0.03, 0.08)),
        ctr=u(*NORMAL_CTR),
        heart_h=u(0.26, 0.31),
        soft=u(0.40, 0.50),
        lung=u(0.10, 0.17),
        dense=u(0.70, 0.78),
        contrast=u(0.78, 0.95) if ap else u(0.9, 1.08),
        brightness=u(-0.04, 0.04),
        gamma=u(0.85, 1.15),
        noise=u(0.016, 0.03) if ap else u(0.008, 0.018),
        lowfreq=u(0.03, 0.06) if ap else u(0.015, 0.035),
    )


def _side(rng: np.random.Generator, p_bilateral: float = 0.0) -> str:
    if p_bilateral and rng.random() < p_bilateral:
        return "bilateral"
    return "left" if rng.random() < 0.5 else "right"


def _pick(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def sample_finding(rng: np.random.Generator, name: str, view: str = "PA") -> Finding:
    """Draw the attributes (side, zone, size, ...) of one finding called ``name``."""
    hedge = bool(rng.random() < 0.08)
    if name == "Cardiomegaly":
        ctr = float(rng.uniform(*ENLARGED_CTR))
        size = "mild" if ctr < 0.61 else "moderate" if ctr < 0.65 else "severe"
        return Finding(name, size=size, uncertain=hedge, extra={"ctr_pa": round(ctr, 4)})
    if name == "Pleural Effusion":
        return Finding(
            name,
            laterality=_side(rng, 0.25),
            zone="lower",
            size=_pick(rng, ("small", "moderate", "large"), [0.45, 0.4, 0.15]),
            uncertain=hedge,
        )
    if name == "Consolidation":
        pneumonia = bool(rng.random() < 0.6)
        return Finding(
            name,
            laterality=_side(rng),
            zone=_pick(rng, ZONES, [0.25, 0.3, 0.45]),
            kind="pneumonia" if pneumonia else "consolidation",
            uncertain=hedge,
            extra={"air_bronchograms": bool(rng.random() < 0.6)},
        )
    if name == "Lung Opacity":
        return Finding(name, laterality=_side(rng), zone=_pick(rng, ZONES), uncertain=hedge)
    if name == "Pneumothorax":
        return Finding(
            name,
            laterality=_side(rng),
            zone="upper",
            size=_pick(rng, ("small", "moderate", "large"), [0.4, 0.35, 0.25]),
            uncertain=hedge,
        )
    if name == "Edema":
        return Finding(
            name,
            laterality="bilateral",
            size=_pick(rng, ("mild", "moderate", "severe"), [0.4, 0.4, 0.2]),
            uncertain=hedge,
        )
    if name == "Atelectasis":
        return Finding(
            name,
            laterality=_side(rng, 0.3),
            zone="lower" if rng.random() < 0.8 else "middle",
            size="plate-like",
            uncertain=hedge,
        )
    if name == "Lung Lesion":
        if rng.random() < 0.65:
            kind, size_cm = "nodule", round(float(rng.uniform(1.5, 2.8)), 1)
        else:
            kind, size_cm = "mass", round(float(rng.uniform(3.5, 6.0)), 1)
        return Finding(
            name,
            laterality=_side(rng),
            zone=_pick(rng, ZONES, [0.4, 0.35, 0.25]),
            kind=kind,
            size=kind,
            size_cm=size_cm,
            uncertain=hedge,
        )
    if name == "Support Devices":
        kind = _pick(rng, DEVICE_KINDS, [0.35, 0.3, 0.2, 0.15])
        side = None
        extra: dict[str, Any] = {}
        if kind == "et_tube":
            extra["tip_cm"] = int(rng.integers(3, 7))
        elif kind == "central_line":
            side = "right" if rng.random() < 0.7 else "left"
        elif kind == "pacemaker":
            side = "left" if rng.random() < 0.8 else "right"
        return Finding(name, laterality=side, kind=kind, extra=extra)
    raise ValueError(f"unknown finding {name!r}")


def sample_findings(
    rng: np.random.Generator, view: str = "PA", normal: bool | None = None
) -> list[Finding]:
    """Draw the planted findings of one study (diseases, then support devices)."""
    if normal is None:
        normal = bool(rng.random() < P_NORMAL)
    names: list[str] = []
    if not normal:
        while not names:
            names = [d for d, p in P_DISEASE.items() if rng.random() < p]
    findings = [sample_finding(rng, n, view) for n in names]
    if rng.random() < P_DEVICES.get(view, 0.1):
        kinds = set(DEVICE_KINDS)  # at most one device of each kind
        n_dev = 1 if rng.random() < 0.7 else 2
        for _ in range(n_dev):
            dev = sample_finding(rng, "Support Devices", view)
            if dev.kind in kinds:
                kinds.discard(dev.kind)
                findings.append(dev)
    return findings


def jitter_anatomy(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient imaged again: new positioning, exposure and noise."""
    u = rng.uniform
    return replace(
        anat,
        tilt=anat.tilt + math.radians(u(-1.5, 1.5)),
        zoom=anat.zoom * u(0.97, 1.03),
        dx=anat.dx + u(-0.02, 0.02),
        dy=anat.dy + u(-0.02, 0.02),
        contrast=anat.contrast * u(0.95, 1.05),
        brightness=anat.brightness + u(-0.02, 0.02),
        gamma=anat.gamma * u(0.95, 1.05),
    )


# ----------------------------------------------------------------------------------------------
# rendering helpers


def _grid(size: int, anat: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - np.float32(1.0)
    x, y = c[None, :], c[:, None]
    ca, sa = math.cos(anat.tilt), math.sin(anat.tilt)
    k = 1.0 / anat.zoom
    X = np.float32(ca * k) * x + np.float32(sa * k) * y + np.float32(anat.dx)
    Y = np.float32(-sa * k) * x + np.float32(ca * k) * y + np.float32(anat.dy)
    return X.astype(np.float32), Y.astype(np.float32)


def _row_slice(y_lo: np.ndarray, y_hi: np.ndarray, a: float, b: float) -> slice:
    """Rows whose y-range (per-row min ``y_lo`` / max ``y_hi``) meets ``[a, b]``."""
    rows = np.flatnonzero((y_hi >= a) & (y_lo <= b))
    return slice(int(rows[0]), int(rows[-1]) + 1) if rows.size else slice(0, 0)


def _hyp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(a^2 + b^2) (np.hypot is several times slower for float32 arrays)."""
    return np.sqrt(a * a + b * b)


def _ramp(d: np.ndarray, eps: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` (positive inside), width ``eps``."""
    return np.clip(d * np.float32(1.0 / eps) + np.float32(0.5), 0.0, 1.0)


def _noise(rng: np.random.Generator, size: int, low: int, sigma: float = 1.0) -> np.ndarray:
    """Smooth unit-variance noise: white noise at ``low`` px, blurred, resized to ``size``."""
    a = rng.standard_normal((low, low), dtype=np.float32)
    if sigma > 0:
        a = cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    a = cv2.resize(a, (size, size), interpolation=cv2.INTER_CUBIC)
    a -= a.mean()
    a /= a.std() + 1e-6
    return a


def _blend(img: np.ndarray, alpha: np.ndarray, target: float) -> np.ndarray:
    img += alpha * (np.float32(target) - img)
    return img


def _lung_sd(
    X: np.ndarray,
    Y: np.ndarray,
    s: float,
    lin: float,
    lout: float,
    top: float,
    peak: float,
) -> np.ndarray:
    """Approximate signed distance to one lung field (positive inside), side sign ``s``."""
    xs = X * np.float32(s)
    h = (peak + 0.14) - top
    t = np.clip((Y - np.float32(top)) * np.float32(1.0 / h), 0.0, 1.0)
    xa = lin + 0.42 * (lout - lin)
    lat = np.float32(xa) + np.float32(lout - xa) * np.sqrt(
        np.sin(np.minimum(t * 1.7, 1.0) * 1.5708)
    )
    med = np.float32(xa) - np.float32(xa - lin) * np.sqrt(np.minimum(t * 4.0, 1.0))
    u = (xs - np.float32((lin + lout) / 2)) * np.float32(2.0 / (lout - lin))
    dome = (
        np.float32(peak)
        + np.float32(0.07) * u * u
        + np.float32(0.09) * (up := np.maximum(u, 0)) * up * up
    )
    d = np.minimum(xs - med, lat - xs)
    d = np.minimum(d, dome - Y)
    return np.minimum(d, Y - np.float32(top))


def _segment_dist(X, Y, x0, y0, x1, y1) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = np.clip(
        ((X - np.float32(x0)) * np.float32(dx) + (Y - np.float32(y0)) * np.float32(dy))
        / np.float32(ll),
        0,
        1,
    )
    return _hyp(X - np.float32(x0) - t * np.float32(dx), Y - np.float32(y0) - t * np.float32(dy))


def _curve_band(X, Y, ys, xs, half_width: float) -> np.ndarray:
    """Soft band around a smooth curve x = f(y) through control points (``ys`` increasing)."""
    yy = np.linspace(ys[0], ys[-1], 96)
    xx = np.interp(yy, ys, xs)
    k = np.exp(-0.5 * (np.arange(-8, 9) / 4.0) ** 2)
    k /= k.sum()
    xx = np.convolve(np.pad(xx, 8, mode="edge"), k, mode="valid")
    slope = np.gradient(xx, yy)
    fx = np.interp(Y, yy, xx).astype(np.float32)
    fs = np.interp(Y, yy, slope).astype(np.float32)
    d = np.abs(X - fx) / np.sqrt(1 + fs * fs)
    inside = (np.float32(ys[0]) <= Y) & (np.float32(ys[-1]) >= Y)
    return _ramp(np.float32(half_width) - d, 0.006) * inside


def _zone_y(anat: Anatomy, s: float, zone: str) -> float:
    top, peak = anat.lung_top, anat.side_dome(s)
    frac = {"upper": 0.2, "middle": 0.5, "lower": 0.78}[zone]
    return top + frac * (peak - top)


# ----------------------------------------------------------------------------------------------
# frontal rendering


def render_frontal(
    anat: Anatomy, findings: list[Finding], size: int, rng: np.random.Generator
) -> Rendered:
    """Render a frontal (PA/AP) radiograph of ``anat`` with ``findings`` planted."""
    X, Y = _grid(size, anat)
    f32 = np.float32
    y_lo, y_hi = Y.min(axis=1), Y.max(axis=1)

    def rows(a: float, b: float) -> slice:
        return _row_slice(y_lo, y_hi, a, b)

    names = {f.name for f in findings}
    by_name: dict[str, list[Finding]] = {}
    for f in findings:
        by_name.setdefault(f.name, []).append(f)

    # --- anatomy adjusted by findings (volume loss, cardiomegaly, AP magnification)
    dome = list(anat.dome)
    for f in by_name.get("Atelectasis", []):
        for i, side in enumerate(("right", "left")):
            if f.laterality in (side, "bilateral"):
                dome[i] -= 0.04
    anat = replace(anat, dome=(dome[0], dome[1]))
    ctr = anat.ctr
    if "Cardiomegaly" in names:
        ctr = float(by_name["Cardiomegaly"][0].extra.get("ctr_pa", 0.62))
    if anat.view == "AP":
        ctr = min(ctr * AP_MAGNIFICATION, MAX_DISPLAYED_CTR)
    lin, lout, top = anat.lung_in, anat.lung_out, anat.lung_top
    hw = ctr * lout  # heart half-width: width / thoracic width (2 * lung_out) = ctr
    hh = anat.heart_h * (1.06 if anat.view == "AP" else 1.0) * (1 + 0.6 * max(0.0, ctr - 0.5))
    hcx = 0.3 * hw
    hcy = anat.dome[1] - 0.55 * hh

    # --- body envelope: trunk with shoulders and neck
    neck = np.clip((f32(-0.62) - Y) * f32(1 / 0.38), 0, 1)
    bw = f32(anat.body_w) - f32(anat.body_w - 0.22) * neck * neck
    body_sd = bw - np.abs(X)
    body = _ramp(body_sd, 0.03)
    img = np.full((size, size), 0.03, np.float32)
    img += body * f32(anat.soft - 0.03)
    img += body * np.clip(Y * f32(0.12), -0.05, 0.12)  # thicker tissue lower down

    # --- lungs
    lung_sd = {s: _lung_sd(X, Y, s, lin, lout, top, anat.side_dome(s)) for s in (-1.0, 1.0)}
    lung_soft = {s: _ramp(d, 0.02) for s, d in lung_sd.items()}
    lungs_bin = (lung_sd[-1.0] > 0) | (lung_sd[1.0] > 0)
    # abdomen below the domes: brighter (liver on the image left), gastric bubble image right
    below = np.clip((Y - f32(max(anat.dome) - 0.05)) * f32(6), 0, 1) * body
    img += below * f32(0.14)
    gy0 = anat.dome[1] + 0.14
    sl = rows(gy0 - 0.16, gy0 + 0.16)
    gb = _ramp(f32(0.09) - _hyp((X[sl] - f32(0.42)) * f32(0.8), Y[sl] - f32(gy0)), 0.04)
    img[sl] -= gb * body[sl] * f32(0.18)

    # --- pneumothorax: collapsed lung inside the lung field
    ptx_region: dict[float, np.ndarray] = {}
    ptx_line = np.zeros_like(img)
    for f in by_name.get("Pneumothorax", []):
        s = SIDE_SIGN[f.laterality or "right"]
        k = {"small": 0.6, "moderate": 0.8, "large": 1.0}[f.size or "moderate"]
        peak = anat.side_dome(s)
        csd = _lung_sd(
            X, Y, s, lin, lout - k * 0.2 * (lout - lin), top + k * 0.32 * (peak - top), peak
        )
        region = (lung_sd[s] > 0) & (csd <= 0)
        ptx_region[s] = region
        ptx_line = np.maximum(
            ptx_line, np.clip(1 - np.abs(csd) * f32(1 / 0.007), 0, 1) * (lung_sd[s] > 0.012)
        )

    # lung markings: vessels radiating from the hila (ridges of noise sampled in polar coords)
    hy = f32(_zone_y(anat, 1.0, "middle") + 0.05)
    hx = f32(lin + 0.1)
    Xh, Yh = np.ascontiguousarray(X[::2, ::2]), np.ascontiguousarray(Y[::2, ::2])
    ax, ay = np.abs(Xh) - hx, Yh - hy
    rad_h = _hyp(ax, ay)
    col = (np.arctan2(ay, ax) + f32(math.pi)) * f32(40 / math.pi) + (Xh < 0) * f32(80)
    row = rad_h * f32(14)
    polar = rng.standard_normal((24, 160), dtype=np.float32)
    polar = cv2.GaussianBlur(polar, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    polar /= polar.std() + 1e-6
    n = cv2.remap(polar, col, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    v = np.exp(-((n * (f32(2.5) + rad_h * f32(6))) ** 2)) * np.clip(
        rad_h * f32(12) - f32(0.3), 0, 1
    )
    v = cv2.resize(v, (size, size), interpolation=cv2.INTER_LINEAR)
    rad = _hyp(np.abs(X) - hx, Y - hy)
    hil = np.exp(-rad * f32(1 / 0.3))
    markings = v * (f32(0.2) + hil) * f32(0.16)
    for region in ptx_region.values():
        markings *= ~region
    for s in (-1.0, 1.0):
        grad = np.clip((Y - f32(top)) * f32(1 / (anat.side_dome(s) - top)), 0, 1) * f32(0.06)
        lung_val = f32(anat.lung) + grad + markings
        if s in ptx_region:
            lung_val = np.where(ptx_region[s], f32(anat.lung - 0.07), lung_val + f32(0.04))
        img += lung_soft[s] * (lung_val - img)
    # hilar shadows
    img += (hil**2) * f32(0.12) * (lung_soft[-1.0] + lung_soft[1.0])

    # --- mediastinum, trachea, heart, aortic knob, spine
    med_w = f32(0.09) + np.clip(Y - f32(top), 0, None) * f32(0.04)
    med = _ramp(med_w - np.abs(X - f32(0.015)), 0.03) * (f32(hcy) > Y)
    heart_r = _hyp((X - f32(hcx)) * f32(1 / hw), (Y - f32(hcy)) * f32(1 / hh))
    heart_sd = (f32(1) - heart_r) * f32(min(hw, hh))
    heart = _ramp(heart_sd, 0.02)
    ky = hcy - hh - 0.02
    sl = rows(ky - 0.1, ky + 0.1)
    dense = np.maximum(med, heart)
    dense[sl] = np.maximum(
        dense[sl], _ramp(f32(0.065) - _hyp(X[sl] - f32(0.13), Y[sl] - f32(ky)), 0.02)
    )
    img = _blend(img, dense * f32(0.92), anat.dense)
    carina = _zone_y(anat, 1.0, "middle") - 0.05
    trachea = _ramp(f32(0.024) - np.abs(X - f32(0.01)), 0.01) * _ramp(f32(carina) - Y, 0.03)
    img -= trachea * f32(0.16)
    spine = _ramp(f32(0.06) - np.abs(X), 0.015) * (f32(0.75) + f32(0.25) * np.cos(Y * f32(57.0)))
    img += spine * f32(0.06) * body

    # --- ribs and clavicles (scapular tips on AP)
    u = np.abs(X)
    thor = _ramp(f32(lout + 0.06) - u, 0.03) * _ramp(f32(max(anat.dome) + 0.15) - Y, 0.05)
    thor *= _ramp(Y - f32(top - 0.1), 0.05) * (u > f32(0.05))
    lungs_soft = np.maximum(lung_soft[-1.0], lung_soft[1.0])
    ph_post = (Y - f32(0.9) * (u - f32(0.28)) ** 2) * f32(1 / 0.135)
    ph_ant = (Y + f32(0.5) * (u - f32(0.95)) ** 2) * f32(1 / 0.17)
    rib = np.clip((np.cos(ph_post * f32(6.2832)) - f32(0.4)) * f32(3), 0, 1)
    rib_a = np.clip((np.cos(ph_ant * f32(6.2832) + f32(1.0)) - f32(0.55)) * f32(3), 0, 1)
    bone = thor * (f32(0.25) + f32(0.75) * lungs_soft) * (f32(1) - f32(0.8) * dense)
    img += bone * (rib * f32(0.1) + rib_a * f32(0.045))
    cl_y = top + (0.08 if anat.view == "AP" else 0.14)
    lift = 0.06 if anat.view == "AP" else 0.16
    sl = rows(cl_y - lift - 0.06, cl_y + 0.06)
    Xc, Yc = X[sl], Y[sl]
    for s in (-1.0, 1.0):
        d = np.minimum(
            _segment_dist(Xc, Yc, s * 0.1, cl_y, s * 0.35, cl_y - lift * 0.6),
            _segment_dist(Xc, Yc, s * 0.35, cl_y - lift * 0.6, s * 0.66, cl_y - lift),
        )
        img[sl] += _ramp(f32(0.032) - d, 0.012) * f32(0.2)
    if anat.view == "AP":
        sl = rows(top - 0.05, top + 0.65)
        for s in (-1.0, 1.0):
            sc = _hyp(
                (X[sl] - f32(s * (lout - 0.02))) * f32(1 / 0.1),
                (Y[sl] - f32(top + 0.3)) * f32(1 / 0.3),
            )
            img[sl] += _ramp(f32(1) - sc, 0.3) * f32(0.06)

    masks: dict[str, np.ndarray] = {}

    def place_x(s: float, cy: float, frac: float, r: float) -> float:
        """x of a finding centre at height cy; on the patient's left, kept clear of the heart."""
        x = lin + frac * (lout - lin)
        if s > 0:
            q = 1 - ((cy - hcy) / hh) ** 2
            border = hcx + hw * math.sqrt(q) if q > 0 else lin
            x = max(x, min(border + 0.6 * r + 0.02, lout - 0.5 * r - 0.02))
        return s * x

    def add_mask(name: str, m: np.ndarray) -> None:
        masks[name] = masks[name] | m if name in masks else m

    # --- pleural effusion: meniscus at the costophrenic angle
    for f in by_name.get("Pleural Effusion", []):
        sides = (
            (-1.0, 1.0) if f.laterality == "bilateral" else (SIDE_SIGN[f.laterality or "right"],)
        )
        for s in sides:
            peak = anat.side_dome(s)
            level = peak - {"small": 0.0, "moderate": 0.2, "large": 0.42}[f.size or "small"]
            xs = X * f32(s)
            w = np.clip((xs - f32(lin)) * f32(1 / (lout - lin)), 0, 1.2)
            surface = f32(level) - f32(0.2) * w * w
            a = np.clip((Y - surface) * f32(1 / 0.05), 0, 1) * f32(0.9)
            a *= lung_soft[s]
            img = _blend(img, a, anat.dense - 0.04)
            add_mask("Pleural Effusion", (a > 0.3) & (lung_sd[s] > 0))

    # --- consolidation and plain (hazy) opacity
    for f in by_name.get("Consolidation", []) + by_name.get("Lung Opacity", []):
        s = SIDE_SIGN[f.laterality or "right"]
        cons = f.name == "Consolidation"
        zone = f.zone or "lower"
        frac = rng.uniform(0.5, 0.68) if zone == "lower" and s > 0 else rng.uniform(0.4, 0.62)
        cy = _zone_y(anat, s, zone) + rng.uniform(-0.04, 0.04)
        r = rng.uniform(0.16, 0.23) if cons else rng.uniform(0.19, 0.26)
        cx = place_x(s, cy, frac, 0.5 * r)
        dd = _hyp(X - f32(cx), (Y - f32(cy)) * f32(1.15)) * f32(1 / r)
        if cons:
            patch = np.clip(_noise(rng, size, 24, 0.7), -1.5, 1.5)
            fine = _noise(rng, size, max(32, size // 5), 0.6)
            env = np.exp(-(dd**2))
            a = np.clip((env - f32(0.25) + f32(0.2) * patch) * f32(2.2), 0, 1)
            a *= f32(0.74) + f32(0.12) * np.clip(fine, -1.5, 1.5)
            if f.extra.get("air_bronchograms"):
                br = np.exp(-((_noise(rng, size, max(16, size // 8), 1.0) * f32(5)) ** 2))
                a -= br * (a > 0.5) * f32(0.4)
        else:
            patch = _noise(rng, size, 10, 0.8)
            env = np.exp(-(dd**2)) * (f32(0.85) + f32(0.2) * patch)
            a = np.clip(env * f32(0.7), 0, 0.6)
        a = np.clip(a, 0, 1) * lung_soft[s] * (f32(1) - heart)
        img = _blend(img, a, anat.dense)
        m = (a > (0.3 if cons else 0.2)) & (lung_sd[s] > 0)
        add_mask(f.name, m)
        add_mask("Lung Opacity", m)
        if cons and f.kind == "pneumonia":
            add_mask("Pneumonia", m)

    # --- edema: bilateral perihilar (batwing) haze
    for f in by_name.get("Edema", []):
        sev = {"mild": 0.6, "moderate": 0.72, "severe": 0.85}[f.size or "moderate"]
        gx = (np.abs(X) - f32(lin + 0.15)) * f32(1 / 0.25)
        gy = (Y - hy) * f32(1 / 0.36)
        haze = np.exp(-0.5 * (gx * gx + gy * gy))
        tex = f32(0.8) + f32(0.25) * _noise(rng, size, 14, 0.8)
        a = np.clip(haze * tex * f32(sev), 0, 0.85) * lungs_soft
        img = _blend(img, a, anat.dense)
        add_mask("Edema", (haze > 0.35) & lungs_bin)

    # --- atelectasis: plate-like band(s) in the lower (or middle) zone
    for f in by_name.get("Atelectasis", []):
        sides = (
            (-1.0, 1.0) if f.laterality == "bilateral" else (SIDE_SIGN[f.laterality or "right"],)
        )
        for s in sides:
            frac = rng.uniform(0.52, 0.66) if s > 0 else rng.uniform(0.42, 0.62)
            cy = _zone_y(anat, s, f.zone or "lower") + rng.uniform(-0.02, 0.03)
            cx = place_x(s, cy, frac, 0.1)
            th = rng.uniform(-0.3, 0.3) - s * 0.1
            nx, ny = -math.sin(th), math.cos(th)
            along = np.abs((X - f32(cx)) * f32(ny) - (Y - f32(cy)) * f32(nx))
            across = np.abs((X - f32(cx)) * f32(nx) + (Y - f32(cy)) * f32(ny))
            half = rng.uniform(0.022, 0.03)
            a = _ramp(f32(half) - across, 0.012) * _ramp(f32(0.22) - along, 0.04) * f32(0.9)
            a *= lung_soft[s] * (f32(1) - heart)
            img = _blend(img, a, anat.dense)
            add_mask("Atelectasis", (a > 0.3) & (lung_sd[s] > 0))

    # --- lung lesion: nodule or mass
    for f in by_name.get("Lung Lesion", []):
        s = SIDE_SIGN[f.laterality or "right"]
        r = 0.5 * (f.size_cm or 2.0) * CM
        zone = f.zone or "upper"
        lo = 0.55 if (zone == "lower" and s > 0) else 0.4
        frac = rng.uniform(lo, 0.7)
        cy = _zone_y(anat, s, zone) + rng.uniform(-0.04, 0.04)
        cx = place_x(s, cy, frac, r)
        ecc = rng.uniform(0.9, 1.1)
        sl = rows(cy - 1.3 * r - 0.03, cy + 1.3 * r + 0.03)
        dd = _hyp((X[sl] - f32(cx)) * f32(ecc), (Y[sl] - f32(cy)) / f32(ecc))
        a = np.zeros_like(img)
        a[sl] = _ramp(f32(r) - dd, 0.012) * f32(0.95 if f.kind == "nodule" else 0.9)
        a[sl] *= lung_soft[s][sl] * (f32(1) - heart[sl])
        img = _blend(img, a, anat.dense + 0.05)
        add_mask("Lung Lesion", (a > 0.45) & (lung_sd[s] > 0))

    # pneumothorax: the visible visceral pleural line (drawn over opacities)
    if ptx_region:
        img = np.maximum(img, ptx_line * f32(anat.soft + 0.15))
        for region in ptx_region.values():
            add_mask("Pneumothorax", region)

    if "Cardiomegaly" in names:
        add_mask("Cardiomegaly", heart_sd > 0)
        add_mask("Enlarged Cardiomediastinum", (heart_sd > 0) | (med > 0.5))

    # --- support devices
    for f in by_name.get("Support Devices", []):
        dev = _device(X, Y, f, anat, carina, hcx, hcy, hw, hh)
        img = np.maximum(img, dev * f32(0.98))
        add_mask("Support Devices", dev > 0.5)

    # --- acquisition: exposure, contrast, gamma, low-frequency field, noise
    img += _noise(rng, size, 5, 0.7) * f32(anat.lowfreq)
    img = (img - f32(0.45)) * f32(anat.contrast) + f32(0.45 + anat.brightness)
    np.clip(img, 0, 1, out=img)
    img = cv2.pow(img, anat.gamma)
    img += rng.standard_normal((size, size), dtype=np.float32) * f32(anat.noise)
    np.clip(img, 0, 1, out=img)
    anatomy = {"body": body_sd > 0, "lungs": lungs_bin, "heart": heart_sd > 0}
    return Rendered(img.astype(np.float32, copy=False), masks, anatomy, ctr)


def _device(X, Y, f: Finding, anat: Anatomy, carina, hcx, hcy, hw, hh) -> np.ndarray:
    f32 = np.float32
    if f.kind == "et_tube":
        tip = carina - float(f.extra.get("tip_cm", 4)) * CM
        return _curve_band(X, Y, [-1.3, -0.8, tip], [0.03, 0.015, 0.01], 0.016)
    if f.kind == "enteric_tube":
        d1 = anat.dome[1]
        return _curve_band(
            X,
            Y,
            [-1.3, -0.6, d1 - 0.05, d1 + 0.12, d1 + 0.24],
            [-0.03, -0.035, 0.02, 0.2, 0.32],
            0.011,
        )
    s = SIDE_SIGN[f.laterality or "right"]
    if f.kind == "central_line":
        tip_y = carina + 0.07
        return _curve_band(
            X,
            Y,
            [-1.3, -0.95, -0.7, tip_y - 0.15, tip_y],
            [s * 0.3, s * 0.22, s * 0.12, -0.06, -0.07],
            0.011,
        )
    # pacemaker: generator box in the upper chest wall plus leads into the heart
    bx, by = s * (anat.lung_out * 0.62), anat.lung_top + 0.12
    bx2 = ((X - f32(bx)) * f32(1 / 0.085)) ** 2
    by2 = ((Y - f32(by)) * f32(1 / 0.06)) ** 2
    box = bx2 * bx2 * bx2 + by2 * by2 * by2
    gen = _ramp(f32(1) - box, 0.3)
    lead = _curve_band(
        X,
        Y,
        [by, by + 0.08, carina, hcy, hcy + 0.6 * hh],
        [bx - s * 0.06, s * 0.2, -0.05, hcx - 0.2 * hw, hcx + 0.35 * hw],
        0.01,
    )
    return np.maximum(gen, lead)


# ----------------------------------------------------------------------------------------------
# lateral view (exists so that view filters have something to drop)


def render_lateral(anat: Anatomy, size: int, rng: np.random.Generator) -> np.ndarray:
    """A simple lateral chest phantom: anterior on the image left, spine on the image right."""
    X, Y = _grid(size, replace(anat, tilt=anat.tilt * 0.5))
    f32 = np.float32
    body = _ramp(f32(1) - _hyp(X * f32(1 / 0.8), (Y - f32(0.2)) * f32(1 / 1.25)), 0.04)
    img = f32(0.03) + body * f32(anat.soft + 0.05)
    lung_r = _hyp((X + f32(0.05)) * f32(1 / 0.6), (Y + f32(0.05)) * f32(1 / 0.72))
    lung = _ramp(f32(1) - lung_r, 0.05) * (f32(max(anat.dome) + 0.1) > Y)
    img = _blend(img, lung * f32(0.8), anat.lung + 0.08)
    heart = _ramp(f32(1) - _hyp((X + f32(0.3)) * f32(1 / 0.3), (Y - f32(0.3)) * f32(1 / 0.3)), 0.05)
    img = _blend(img, heart * f32(0.6), anat.dense)
    spine = _ramp(f32(0.09) - np.abs(X - f32(0.55) - Y * f32(0.08)), 0.02)
    img += spine * (f32(0.75) + f32(0.25) * np.cos(Y * f32(40.0))) * f32(0.25)
    img += np.clip((Y - f32(max(anat.dome) + 0.05)) * f32(5), 0, 1) * body * f32(0.15)
    img += _noise(rng, size, 5, 0.7) * f32(anat.lowfreq)
    img = (img - f32(0.45)) * f32(anat.contrast) + f32(0.45 + anat.brightness)
    np.clip(img, 0, 1, out=img)
    img += rng.standard_normal((size, size), dtype=np.float32) * f32(anat.noise)
    np.clip(img, 0, 1, out=img)
    return img.astype(np.float32, copy=False)


def truth_labels(findings: list[Finding]) -> dict[str, int]:
    """The 14 CheXpert labels (0/1) implied by the planted findings."""
    names = {f.name for f in findings}
    lab = dict.fromkeys(CHEXPERT_LABELS, 0)
    for n in names:
        lab[n] = 1
    if "Consolidation" in names:
        lab["Lung Opacity"] = 1
        if any(f.kind == "pneumonia" for f in findings if f.name == "Consolidation"):
            lab["Pneumonia"] = 1
    if "Cardiomegaly" in names:
        lab["Enlarged Cardiomediastinum"] = 1
    lab["No Finding"] = int(not (names & set(DISEASES)))
    return lab
