"""Bundle adjustment of head poses, 3D points and the focal length.

Unknowns: per frame the head-to-camera rotation (axis-angle) and translation (world units), every
point's position in the head frame, and one focal length in pixels (the principal point is kept).
Anchor points (here: MediaPipe's rigid landmarks, seen in every frame) carry a weak prior towards
given positions (the canonical face): it pins the world frame and its metric scale, which a bundle
adjustment cannot find alone, while leaving them free to take the subject's own face shape.
Cameras are OpenGL-style (looking down -z, +y up): a camera-space point P lands on pixel
    u = cx + f * P.x / (-P.z),   v = cy - f * P.y / (-P.z).
Cost: the reprojection error of each observation (times its weight) under a Huber loss, so that a
track that slid or sat on something non-rigid cannot pull the poses; plus a small temporal prior on
the second difference of rotations and translations (real head motion is smooth at 25 fps, tracking
noise is not), small enough that real turns survive, and not across a cut between two shots.

Solver: Levenberg-Marquardt. Each step eliminates the keypoints (3x3 blocks) and solves the reduced
system over poses, anchors and focal length with conjugate gradients. The reduced system is never
formed (long tracks cost nothing extra); its preconditioner is exact for the couplings between frames
up to a band apart, factored with a banded Cholesky, and for the anchors and the focal length, which
couple all frames and are eliminated on top as a dense border. The band spans the longest keypoint
track (up to MAX_BAND frames), so with tracks cut into segments that short (stabilizer.py) the
preconditioner is the exact inverse and each step is in effect a direct solve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from threadpoolctl import threadpool_limits

from .headpose import hat, rotation_from_vector

POSE = 6      # parameters per frame: rotation (3), translation (3)
MIN_BAND = 2  # the temporal prior couples frames two apart
MAX_BAND = 24  # frames apart still coupled in the preconditioner, at most


@dataclass
class Observations:
    frame: np.ndarray    # (M,) int
    point: np.ndarray    # (M,) int
    uv: np.ndarray       # (M, 2) pixels
    weight: np.ndarray   # (M,) residual weight


@dataclass
class BundleSettings:
    smooth_rotation: float = 100.0     # px per radian of rotation second difference
    smooth_translation: float = 100.0  # px per world unit of translation second difference
    anchor_prior: float = 50.0        # px per world unit away from an anchor's prior position
    loss_scale: float = 1.0           # px: weighted reprojection errors beyond this count linearly (Huber)
    focal_prior: float = 30.0         # px per unit of log(focal / initial focal): a weak pull
    iterations: int = 12
    tolerance: float = 1e-4            # stop when an iteration lowers the cost by less than this fraction
    refine_focal: bool = True


@dataclass
class BundleResult:
    rotations: np.ndarray      # (N, 3) axis-angle, head -> camera
    translations: np.ndarray   # (N, 3)
    points: np.ndarray         # (P, 3)
    focal: float
    residuals: np.ndarray      # (M, 2) unweighted reprojection errors, px, in the observations' order
    iterations: int
    cost: float


def project(rotations, translations, points, focal, cx, cy, frame, point):
    """Pixels (M, 2) of points[point] seen by the cameras of frame[frame], and the camera-space points."""
    camera = np.einsum("mij,mj->mi", rotation_from_vector(rotations)[frame], points[point]) + translations[frame]
    depth = -camera[:, 2]
    uv = np.stack([cx + focal * camera[:, 0] / depth, cy - focal * camera[:, 1] / depth], 1)
    return uv, camera


def _right_jacobian(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) right jacobian of SO(3): R(r + dr) ~ R(r) exp(hat(J_r(r) dr))."""
    theta = np.linalg.norm(r, axis=1)[:, None, None]
    k = hat(r)
    small = theta < 1e-6
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1 - np.cos(safe)) / safe ** 2)
    b = np.where(small, 1 / 6, (safe - np.sin(safe)) / safe ** 3)
    return np.eye(3) - a * k + b * (k @ k)


def _second_difference(n: int, breaks=()) -> scipy.sparse.csr_matrix:
    """Second differences of frames i, i+1, i+2, but none that spans a break (a cut: frame b starts a shot)."""
    if n < 3:
        return scipy.sparse.csr_matrix((0, n))
    first = np.arange(n - 2)
    spans = np.zeros(n - 2, bool)
    for b in breaks:
        spans[max(0, b - 2):max(0, b)] = True  # i = b - 2 and b - 1 reach frame b from before it
    first = first[~spans]
    rows = np.repeat(np.arange(len(first)), 3)
    cols = (first[:, None] + np.arange(3)).ravel()
    return scipy.sparse.csr_matrix((np.tile([1.0, -2.0, 1.0], len(first)), (rows, cols)), shape=(len(first), n))


class _Summer:
    """Sums per-observation arrays into per-frame (or per-point) arrays with one sparse product."""

    def __init__(self, index: np.ndarray, count: int, weight: np.ndarray | None = None):
        m = len(index)
        weight = np.ones(m) if weight is None else weight
        self.matrix = scipy.sparse.csr_matrix((weight, (index, np.arange(m))), shape=(count, m))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (self.matrix @ values.reshape(len(values), -1)).reshape((self.matrix.shape[0],) + values.shape[1:])


def _block_matrix(row_starts, col_starts, blocks, shape) -> scipy.sparse.csr_matrix:
    """Sparse matrix from (K, h, w) blocks placed at (row_starts[k], col_starts[k]); duplicates add up."""
    k, h, w = blocks.shape
    rows = np.broadcast_to(np.asarray(row_starts)[:, None, None] + np.arange(h)[None, :, None], blocks.shape)
    cols = np.broadcast_to(np.asarray(col_starts)[:, None, None] + np.arange(w)[None, None, :], blocks.shape)
    return scipy.sparse.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=shape)


class _Problem:
    """The cost, its normal equations and their solution. Observations sorted by (point, frame)."""

    def __init__(self, n_frames: int, n_points: int, anchors: np.ndarray, anchor_prior: np.ndarray,
                 focal: float, cx: float, cy: float, obs: Observations, settings: BundleSettings, breaks=()):
        self.n_frames, self.n_points = n_frames, n_points
        self.cx, self.cy, self.obs, self.s = cx, cy, obs, settings
        self.anchors, self.anchor_prior = anchors, anchor_prior
        is_anchor = np.zeros(n_points, bool)
        is_anchor[anchors] = True
        self.keypoints = np.flatnonzero(~is_anchor)
        self.anchor_obs = is_anchor[obs.point]
        # Position of each point among the keypoints (eliminated) or among the anchors (border).
        self.slot = np.zeros(n_points, np.int64)
        self.slot[self.keypoints] = np.arange(len(self.keypoints))
        self.slot[anchors] = np.arange(len(anchors))
        self.sum_by_frame = _Summer(obs.frame, n_frames)
        self.sum_by_point = _Summer(obs.point, n_points)
        self.second = _second_difference(n_frames, breaks)
        # The temporal prior is quadratic: its normal matrix is constant and banded.
        # Translations are parametrised as tau = t / focal (see bundle_adjust); the prior on tau is
        # scaled by the initial focal length so that its weight is per world unit.
        self.smooth_tau = settings.smooth_translation * focal
        self.focal0 = focal
        weights = [settings.smooth_rotation ** 2] * 3 + [self.smooth_tau ** 2] * 3
        self.prior_normal = scipy.sparse.kron(self.second.T @ self.second, scipy.sparse.diags(weights)).tocsr()
        key_obs = ~self.anchor_obs
        span = 0
        if key_obs.any():
            first = np.full(n_points, n_frames)
            last = np.full(n_points, -1)
            np.minimum.at(first, obs.point[key_obs], obs.frame[key_obs])
            np.maximum.at(last, obs.point[key_obs], obs.frame[key_obs])
            span = int((last - first)[last >= 0].max())
        self.band = int(np.clip(span, MIN_BAND, MAX_BAND))
        self._prepare_band()

    def _prepare_band(self):
        """Index maps for the preconditioner. Keypoint observations of one point in frames at most `band`
        apart are at most `band` places apart in (point, frame) order; block (k, d) (frames k + d and k)
        entry [a, b] is matrix entry (6 (k + d) + a, 6 k + b), stored at band[6 d + a - b, 6 k + b]."""
        obs, n, band = self.obs, self.n_frames, self.band
        self.pair_sums = []
        for shift in range(band + 1):
            first, second = slice(0, len(obs.frame) - shift), slice(shift, None)
            gap = obs.frame[second] - obs.frame[first]
            same = (obs.point[first] == obs.point[second]) & (gap >= 0) & (gap <= band) & ~self.anchor_obs[first]
            target = np.where(same, obs.frame[first] * (band + 1) + np.clip(gap, 0, band), 0)
            self.pair_sums.append(_Summer(target, n * (band + 1), same.astype(np.float64)))
        d, a, b = np.meshgrid(np.arange(band + 1), np.arange(POSE), np.arange(POSE), indexing="ij")
        lower = POSE * d + a - b >= 0
        self.band_entry = (d[lower], a[lower], b[lower])
        self.band_at = (POSE * d + a - b)[lower]
        prior = self.prior_normal.tocoo()
        blocks = np.zeros((n, band + 1, POSE, POSE))
        near = prior.row >= prior.col
        rows, cols = prior.row[near], prior.col[near]
        blocks[cols // POSE, rows // POSE - cols // POSE, rows % POSE, cols % POSE] = prior.data[near]
        self.prior_band_blocks = blocks

    def cost(self, r, tau, X, f):
        """Total cost and the reprojection errors (M, 2)."""
        obs, s = self.obs, self.s
        uv, _ = project(r, tau * f, X, f, self.cx, self.cy, obs.frame, obs.point)
        error = uv - obs.uv
        norm = np.linalg.norm(error, axis=1) * obs.weight
        k = s.loss_scale
        huber = np.where(norm <= k, norm ** 2, 2 * k * norm - k ** 2)
        d2 = self.second
        prior = ((s.smooth_rotation * (d2 @ r)) ** 2).sum() + ((self.smooth_tau * (d2 @ tau)) ** 2).sum()
        prior += ((s.anchor_prior * (X[self.anchors] - self.anchor_prior)) ** 2).sum()
        prior += (s.focal_prior * np.log(f / self.focal0)) ** 2
        return 0.5 * (huber.sum() + prior), error

    def normal_equations(self, r, tau, X, f, error):
        """Gauss-Newton normal equations (IRLS weights for the Huber loss), by blocks."""
        obs, s = self.obs, self.s
        R = rotation_from_vector(r)[obs.frame]
        Xm = X[obs.point]
        camera = np.einsum("mij,mj->mi", R, Xm) + f * tau[obs.frame]
        depth = -camera[:, 2]
        d_uv = np.zeros((len(depth), 2, 3))
        d_uv[:, 0, 0] = f / depth
        d_uv[:, 0, 2] = f * camera[:, 0] / depth ** 2
        d_uv[:, 1, 1] = -f / depth
        d_uv[:, 1, 2] = -f * camera[:, 1] / depth ** 2
        # camera = R X + f tau:  d/dr = -R hat(X) J_r(r),  d/dtau = f,  d/dX = R,  d/df (via tau) = tau
        j_pose = np.concatenate([d_uv @ (-R @ hat(Xm) @ _right_jacobian(r)[obs.frame]), f * d_uv], 2)  # (M,2,6)
        j_point = d_uv @ R                                                                           # (M,2,3)
        j_focal = (np.stack([camera[:, 0] / depth, -camera[:, 1] / depth], 1)
                   + np.einsum("mij,mj->mi", d_uv, tau[obs.frame])) * s.refine_focal                # (M, 2)
        norm = np.linalg.norm(error, axis=1) * obs.weight
        irls = obs.weight ** 2 * np.minimum(1.0, s.loss_scale / np.maximum(norm, 1e-12))
        we = error * irls[:, None]
        wj_pose_t = (j_pose * irls[:, None, None]).transpose(0, 2, 1)    # (M, 6, 2)
        wj_point_t = (j_point * irls[:, None, None]).transpose(0, 2, 1)  # (M, 3, 2)
        by_frame, by_point = self.sum_by_frame, self.sum_by_point
        d2 = self.second
        g_pose = by_frame(j_pose.transpose(0, 2, 1) @ we[:, :, None])[..., 0]
        g_pose[:, :3] += s.smooth_rotation ** 2 * (d2.T @ (d2 @ r))
        g_pose[:, 3:] += self.smooth_tau ** 2 * (d2.T @ (d2 @ tau))
        c = by_point(wj_point_t @ j_point)
        c[self.anchors] += s.anchor_prior ** 2 * np.eye(3)
        g_point = by_point(j_point.transpose(0, 2, 1) @ we[:, :, None])[..., 0]
        g_point[self.anchors] += s.anchor_prior ** 2 * (X[self.anchors] - self.anchor_prior)
        return dict(
            a=by_frame(wj_pose_t @ j_pose),                               # (N, 6, 6)
            b=wj_pose_t @ j_point,                                        # (M, 6, 3)
            c=c,                                                          # (P, 3, 3)
            g_pose=g_pose, g_point=g_point,
            g_focal=float((j_focal * we).sum()) + s.focal_prior ** 2 * np.log(f / self.focal0) / f,
            a_focal=float((j_focal * j_focal * irls[:, None]).sum()) + (s.focal_prior / f) ** 2,
            e_pose=by_frame(wj_pose_t @ j_focal[:, :, None])[..., 0],    # pose-focal coupling (N, 6)
            e_point=by_point(wj_point_t @ j_focal[:, :, None])[..., 0])  # point-focal coupling (P, 3)

    def solve_step(self, ne, damping):
        """Solve the damped normal equations for the step (poses, points, focal).

        y = [poses (6N), anchors (3L), focal], x = keypoints. With the normal matrix [[A, B], [B^T, C]]
        over (y, x): (A - B C^-1 B^T) y = -(g_y - B C^-1 g_x), then x = -C^-1 (g_x + B^T y).
        """
        obs = self.obs
        n, keys, anchors = self.n_frames, self.keypoints, self.anchors
        n_y = POSE * n + 3 * len(anchors) + 1
        focal_at = n_y - 1

        def damped(blocks):
            return blocks + damping * np.einsum("kii->ki", blocks)[:, :, None] * np.eye(blocks.shape[1])

        a_blocks = damped(ne["a"])
        c = damped(ne["c"])
        a_focal = ne["a_focal"] * (1 + damping) + 1e-9
        on_key = ~self.anchor_obs
        frame_at, slot = POSE * obs.frame, self.slot[obs.point]
        anchor_at = POSE * n + 3 * slot
        pose_anchor = _block_matrix(frame_at[~on_key], anchor_at[~on_key], ne["b"][~on_key], (n_y, n_y))
        coupling = np.r_[ne["e_pose"].ravel(), ne["e_point"][anchors].ravel()]
        others, focal_index = np.arange(n_y - 1), np.full(n_y - 1, focal_at)
        focal_part = scipy.sparse.csr_matrix((np.r_[coupling, coupling, a_focal],
                                              (np.r_[focal_index, others, focal_at],
                                               np.r_[others, focal_index, focal_at])), shape=(n_y, n_y))
        anchor_starts = POSE * n + 3 * np.arange(len(anchors))
        a = (_block_matrix(POSE * np.arange(n), POSE * np.arange(n), a_blocks, (n_y, n_y))
             + _block_matrix(anchor_starts, anchor_starts, c[anchors], (n_y, n_y))
             + pose_anchor + pose_anchor.T + focal_part
             + scipy.sparse.block_diag([self.prior_normal, scipy.sparse.csr_matrix((n_y - POSE * n,) * 2)]))
        a = a.tocsr()
        c_inv = np.linalg.inv(c[keys] + 1e-9 * np.eye(3))
        c_inv_sparse = _block_matrix(3 * np.arange(len(keys)), 3 * np.arange(len(keys)), c_inv, (3 * len(keys),) * 2)
        b = (_block_matrix(frame_at[on_key], 3 * slot[on_key], ne["b"][on_key], (n_y, 3 * len(keys)))
             + _block_matrix(np.full(len(keys), focal_at), 3 * np.arange(len(keys)),
                             ne["e_point"][keys][:, None, :], (n_y, 3 * len(keys)))).tocsr()
        bc = (b @ c_inv_sparse).tocsr()
        g_x = ne["g_point"][keys].ravel()
        rhs = -(np.r_[ne["g_pose"].ravel(), ne["g_point"][anchors].ravel(), ne["g_focal"]] - bc @ g_x)
        operator = scipy.sparse.linalg.LinearOperator((n_y, n_y), matvec=lambda v: a @ v - bc @ (b.T @ v),
                                                      dtype=np.float64)
        # Border columns of the reduced matrix: anchors have no keypoint term, the focal length has.
        border = a[:, POSE * n:].toarray()
        border[:, -1] = operator.matvec(np.eye(1, n_y, focal_at)[0])
        c_inv_per_obs = np.zeros((len(slot), 3, 3))   # an anchor's observation has no keypoint term
        c_inv_per_obs[on_key] = c_inv[slot[on_key]]
        precondition = self._preconditioner(a_blocks, ne["b"], c_inv_per_obs, border)
        y, _ = scipy.sparse.linalg.cg(operator, rhs, M=precondition, rtol=1e-3, maxiter=100)
        dx = -(c_inv_sparse @ (g_x + b.T @ y))
        d_points = np.zeros((self.n_points, 3))
        d_points[keys] = dx.reshape(-1, 3)
        d_points[anchors] = y[POSE * n:focal_at].reshape(-1, 3)
        return y[:POSE * n].reshape(n, POSE), d_points, y[focal_at]

    def _preconditioner(self, a_blocks, b_blocks, c_inv_per_obs, border):
        """Exact inverse of the reduced system restricted to frames up to `band` apart (banded Cholesky),
        bordered by the anchors' and the focal length's full rows and columns."""
        n = self.n_frames
        bc = b_blocks @ c_inv_per_obs                                                     # (M, 6, 3)
        b_t = b_blocks.transpose(0, 2, 1)
        m = len(bc)
        pairs = sum(pair_sum(bc[shift:] @ b_t[:m - shift]) for shift, pair_sum in enumerate(self.pair_sums))
        blocks = self.prior_band_blocks - pairs.reshape(n, self.band + 1, POSE, POSE)
        blocks[:, 0] += a_blocks
        d, a, b = self.band_entry
        band = np.zeros((POSE * (self.band + 1), POSE * n))
        band[self.band_at[:, None], POSE * np.arange(n)[None, :] + b[:, None]] = blocks[:, d, a, b].T
        try:
            factor = scipy.linalg.cholesky_banded(band, lower=True, check_finite=False)

            def solve_poses(v):
                return scipy.linalg.cho_solve_banded((factor, True), v, check_finite=False)
        except np.linalg.LinAlgError:  # not positive definite (rare): fall back to the diagonal
            def solve_poses(v):
                return v / np.maximum(band[0], 1e-12).reshape((-1,) + (1,) * (v.ndim - 1))
        # Border elimination: [S E; E^T G] y = r  ->  (G - E^T S^-1 E) y_b = r_b - E^T S^-1 r_p.
        e, g = border[:POSE * n], border[POSE * n:]
        s_inv_e = solve_poses(e)
        schur = g - e.T @ s_inv_e
        # Where the band truncates long tracks this Schur complement can lose definiteness: clip its
        # spectrum so that the preconditioner stays positive definite, as conjugate gradients need.
        values, vectors = np.linalg.eigh((schur + schur.T) / 2)
        values = np.maximum(values, 1e-9 * max(values.max(), 1e-12))
        schur_inverse = (vectors / values) @ vectors.T

        def apply(v):
            z = solve_poses(v[:POSE * n])
            y_border = schur_inverse @ (v[POSE * n:] - e.T @ z)
            return np.r_[z - s_inv_e @ y_border, y_border]

        return scipy.sparse.linalg.LinearOperator((len(border),) * 2, matvec=apply, dtype=np.float64)


@threadpool_limits.wrap(limits=1, user_api="blas")
def bundle_adjust(rotations: np.ndarray, translations: np.ndarray, points: np.ndarray, focal: float,
                  cx: float, cy: float, observations: Observations, anchors: np.ndarray,
                  anchor_positions: np.ndarray, settings: BundleSettings = BundleSettings(),
                  breaks=()) -> BundleResult:
    """Jointly refine poses, points and (optionally) the focal length from the values given.

    BLAS runs on one thread here: its calls are small (banded factors, 3x3 and 6x6 blocks), and
    threads only cost synchronisation (a banded Cholesky took 1 s on two busy cores, 2 ms on one).

    anchors: ids of the points held weakly at anchor_positions (fixes the world frame and scale).
    breaks: frames that start a shot (a cut): the smoothness prior does not reach across them.
    """
    order = np.lexsort((observations.frame, observations.point))  # the preconditioner wants this order
    sorted_obs = Observations(*(np.asarray(a)[order] for a in (observations.frame, observations.point,
                                                                observations.uv, observations.weight)))
    problem = _Problem(len(rotations), len(points), np.asarray(anchors, np.int64),
                       np.asarray(anchor_positions, np.float64), focal, cx, cy, sorted_obs, settings, breaks)
    # Translations as tau = t / f: a longer focal length with the head proportionally further away
    # gives nearly the same image, so in (tau, f) that near-ambiguity lies along the focal axis alone
    # and the solver can walk it in a few steps rather than zig-zag down a curved valley.
    X, f = np.array(points, np.float64), float(focal)
    r, tau = np.array(rotations, np.float64), np.array(translations, np.float64) / f
    cost, error = problem.cost(r, tau, X, f)
    damping = 1e-3
    iteration = 0
    for iteration in range(1, settings.iterations + 1):
        ne = problem.normal_equations(r, tau, X, f, error)
        while True:
            d_pose, d_point, d_focal = problem.solve_step(ne, damping)
            candidate = (r + d_pose[:, :3], tau + d_pose[:, 3:], X + d_point, f + d_focal)
            new_cost, new_error = problem.cost(*candidate)
            if new_cost < cost or damping > 1e6:
                break
            damping *= 10
        if new_cost >= cost:
            break
        improvement = (cost - new_cost) / cost
        (r, tau, X, f), cost, error = candidate, new_cost, new_error
        damping = max(damping / 3, 1e-7)
        if improvement < settings.tolerance:
            break
    residuals = np.empty_like(error)
    residuals[order] = error
    return BundleResult(r, tau * f, X, f, residuals, iteration, float(cost))
