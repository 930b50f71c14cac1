"""Map coordinates in and out: a raster's georeference, pixel boxes <-> map polygons, vector files.

Numpy only at import; rasterio (raster georeference), pyproj (reprojection), pyogrio and shapely
(GeoPackage / shapefile I/O) are imported inside the functions that need them.

Frames and conventions:
- Pixel boxes are ``(N, 4)`` XYXY in original-raster pixels; pixel ``(row i, col j)`` covers
  ``[j, j+1) x [i, i+1)``, so the raster's top-left corner is pixel point ``(0, 0)``.
- ``transform`` is the GDAL / rasterio affine ``(a, b, c, d, e, f)``: a pixel point ``(x, y)`` lies at
  map point ``(a*x + b*y + c, d*x + e*y + f)`` (rasterio's ``dataset.transform[:6]``; a north-up
  raster has ``b = d = 0`` and ``e < 0``).
- Map points are ``(..., 2)`` float64 ``(x, y)`` in the CRS's *traditional GIS order*: easting,
  northing for projected CRSs, longitude, latitude for geographic ones (pyproj ``always_xy``), which
  is also GeoJSON's order.
- A box becomes a 4-vertex polygon (5 points, closed ring) whose exterior ring runs
  counter-clockwise in map coordinates (RFC 7946); reprojected, its four corners are transformed
  (edges are not densified: for boxes of up to a few hundred metres the curvature is far below a pixel).

What we write (:func:`write_boxes_vector`, :func:`write_detections_vector`):
- GeoJSON (``.geojson`` / ``.json``): a FeatureCollection, written atomically, with the foreign
  members ``"format"`` and ``"version"``. In EPSG:4326 (``dst_crs="EPSG:4326"``) it is plain RFC 7946
  (no ``crs`` member, longitude/latitude). In any other CRS (by default the raster's, e.g. a UTM
  zone) it carries the pre-RFC ``"crs": {"type": "name", ...}`` member that GDAL writes and reads:
  QGIS, GDAL/OGR, geopandas and pyogrio open it in that CRS; a strict RFC 7946 reader (a web map)
  assumes WGS84 and would misplace it, so pass ``dst_crs="EPSG:4326"`` for those.
- GeoPackage (``.gpkg``): any CRS, one layer, with ``format`` / ``version`` in the dataset metadata;
  written to a temporary file next to the destination and renamed into place.
"""

import contextlib
import json
import logging
import os
import tempfile
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .coco import DatasetError

__all__ = [
    "GeoError",
    "Georeference",
    "read_georeference",
    "crs_name",
    "pixel_to_map",
    "map_to_pixel",
    "boxes_to_rings",
    "rings_to_boxes",
    "reproject_points",
    "write_boxes_vector",
    "write_detections_vector",
    "VectorLabels",
    "read_vector_labels",
    "PixelBoxes",
    "labels_to_pixel_boxes",
    "atomic_output_path",
    "VECTOR_FORMAT",
    "VECTOR_VERSION",
]

logger = logging.getLogger(__name__)

VECTOR_FORMAT = "sniper_d2.boxes"
VECTOR_VERSION = 1
GEOJSON_EXTENSIONS = (".geojson", ".json")
GPKG_EXTENSIONS = (".gpkg",)


class GeoError(DatasetError):
    """A raster or vector file cannot be used as asked (no CRS, unknown field, empty, unreadable);
    the message names the file and the problem. A :class:`~sniper_d2.coco.DatasetError`, so the
    tools' :func:`~sniper_d2.cli.run_main` ends the program with it in one line."""


class Georeference(NamedTuple):
    """Where a raster lies on the map.

    Attributes:
        crs (str): the raster's CRS as a string pyproj and GDAL accept (``"EPSG:32611"`` when the
            CRS has an EPSG code, else WKT).
        transform (tuple of 6 float): the affine ``(a, b, c, d, e, f)`` from pixel points to map
            points (see the module docstring).
        height, width (int): raster size in pixels.
        path (str or None): the raster file, for messages.
    """

    crs: str
    transform: Tuple[float, float, float, float, float, float]
    height: int
    width: int
    path: Optional[str] = None


def crs_name(crs):
    """``"EPSG:<code>"`` for a CRS that has one, else its WKT (accepts anything pyproj accepts).

    Raises:
        pyproj.exceptions.CRSError: pyproj does not know the CRS.
    """
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def read_georeference(path):
    """The georeference of a raster, or None for a plain image (no CRS or no geotransform).

    Args:
        path (str): any raster GDAL reads (GeoTIFF, JPEG2000, ...).

    Raises:
        GeoError: the file cannot be opened by rasterio; or it has a CRS but no geotransform
            (only ground control points), which we do not handle.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    import warnings

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GeoError(f"{path}: raster not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as ds:
                crs, transform, height, width = ds.crs, ds.transform, ds.height, ds.width
                has_gcps = bool(ds.gcps[0])
        except RasterioIOError as e:
            raise GeoError(f"{path}: cannot be read as a raster: {e}") from e
    if crs is None:
        return None
    if transform.is_identity:
        if has_gcps:
            raise GeoError(f"{path}: georeferenced by ground control points only; warp it first "
                           "(gdalwarp) to get a geotransform")
        return None
    return Georeference(crs_name(crs), tuple(float(v) for v in transform[:6]), int(height), int(width), path)


def _affine(transform):
    t = np.asarray(transform, np.float64).reshape(-1)
    if t.shape != (6,):
        raise ValueError(f"transform must have 6 coefficients (a, b, c, d, e, f), got {t.shape}")
    return t


def pixel_to_map(points_px, transform):
    """Pixel points -> map points through the affine.

    Args:
        points_px: (..., 2) array of (x, y) pixel points (original-raster pixels).
        transform: (a, b, c, d, e, f).

    Returns:
        (..., 2) float64 map points.
    """
    a, b, c, d, e, f = _affine(transform)
    p = np.asarray(points_px, np.float64)
    x, y = p[..., 0], p[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def map_to_pixel(points_map, transform):
    """Map points -> pixel points (the inverse affine; same shapes as :func:`pixel_to_map`)."""
    a, b, c, d, e, f = _affine(transform)
    det = a * e - b * d
    if det == 0:
        raise ValueError(f"transform {tuple(transform)} is not invertible")
    p = np.asarray(points_map, np.float64)
    u, v = p[..., 0] - c, p[..., 1] - f
    return np.stack([(e * u - b * v) / det, (-d * u + a * v) / det], axis=-1)


def boxes_to_rings(boxes_px, transform):
    """Pixel boxes -> closed map polygons, exterior rings counter-clockwise in map coordinates.

    Args:
        boxes_px: (N, 4) XYXY in original-raster pixels.
        transform: the raster's affine (a, b, c, d, e, f).

    Returns:
        (N, 5, 2) float64 map points; ring[4] == ring[0].
    """
    b = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    # (x0,y0) -> (x1,y0) -> (x1,y1) -> (x0,y1) winds counter-clockwise in (x, y) axes; an affine
    # with det < 0 (north up: e < 0) flips it to clockwise on the map, so reverse it there.
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x1, y1], -1),
                        np.stack([x0, y1], -1)], axis=1)
    a, bb, _, d, e, _ = _affine(transform)
    if a * e - bb * d < 0:
        corners = corners[:, ::-1]
    rings = np.concatenate([corners, corners[:, :1]], axis=1)
    return pixel_to_map(rings, transform)


def rings_to_boxes(rings_px):
    """Bounding boxes of pixel-frame polygons.

    Args:
        rings_px: (N, K, 2) pixel points (K vertices each, NaN-padded for shorter polygons).

    Returns:
        (N, 4) float64 XYXY.
    """
    r = np.asarray(rings_px, np.float64)
    if r.shape[0] == 0:
        return np.zeros((0, 4), np.float64)
    lo, hi = np.nanmin(r, axis=1), np.nanmax(r, axis=1)
    return np.concatenate([lo, hi], axis=1)


def reproject_points(points, src_crs, dst_crs):
    """Reproject map points between CRSs (pyproj, vectorized; traditional GIS axis order).

    Args:
        points: (..., 2) map points in ``src_crs``; NaN stays NaN.
        src_crs, dst_crs: anything pyproj accepts (``"EPSG:4326"``, WKT, a pyproj/rasterio CRS).

    Returns:
        (..., 2) float64 points in ``dst_crs``.
    """
    from pyproj import CRS, Transformer

    p = np.asarray(points, np.float64)
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return p.copy()
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    x, y = transformer.transform(p[..., 0].ravel(), p[..., 1].ravel())
    return np.stack([np.asarray(x).reshape(p.shape[:-1]), np.asarray(y).reshape(p.shape[:-1])], axis=-1)


@contextlib.contextmanager
def atomic_output_path(path):
    """A temporary path next to ``path`` (same extension) for a library that writes by file name;
    renamed to ``path`` on success, removed on an exception."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp" + ext, dir=folder)
    os.close(fd)
    os.remove(tmp)  # the writer creates it (GDAL drivers refuse to open an existing empty file)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, tmp + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)
        raise


def _is_geographic(crs):
    from pyproj import CRS

    return CRS.from_user_input(crs).is_geographic


def _vector_driver(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in GEOJSON_EXTENSIONS:
        return "GeoJSON"
    if ext in GPKG_EXTENSIONS:
        return "GPKG"
    raise GeoError(f"{path}: unknown vector format {ext!r}; use .geojson (GeoJSON) or .gpkg (GeoPackage)")


def _columns(properties, n):
    """Check per-feature property columns: dict name -> (N,) sequence of str / int / float."""
    cols = {}
    for name, values in properties.items():
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"property {name!r} has shape {arr.shape}, expected ({n},)")
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        cols[name] = arr
    return cols


def write_boxes_vector(path, georef, boxes_px, properties, dst_crs=None, layer="boxes", extra=None):
    """Write pixel boxes as map polygons with per-feature properties.

    Args:
        path (str): ``.geojson`` / ``.json`` (GeoJSON) or ``.gpkg`` (GeoPackage, needs pyogrio).
        georef (Georeference): the raster the boxes are in.
        boxes_px: (N, 4) XYXY in original-raster pixels.
        properties (dict[str, sequence]): columns of N values each (str, int or float).
        dst_crs: the CRS to write (anything pyproj accepts); None: the raster's CRS.
        layer (str): the layer name (GeoPackage; GeoJSON ``name``).
        extra (dict or None): more JSON-serializable metadata (GeoJSON top-level members;
            GeoPackage dataset metadata, as strings).

    Returns:
        str: ``path``. See the module docstring for the CRS each format carries.
    """
    from pyproj.exceptions import CRSError

    driver = _vector_driver(path)
    boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    cols = _columns(properties, len(boxes))
    try:
        dst = crs_name(dst_crs) if dst_crs is not None else georef.crs
    except CRSError as e:
        raise GeoError(f"{path}: unknown CRS {str(dst_crs)[:80]!r} to write in: {e}") from e
    rings = reproject_points(boxes_to_rings(boxes, georef.transform), georef.crs, dst)
    meta = {"format": VECTOR_FORMAT, "version": VECTOR_VERSION, "source_raster": georef.path, **(extra or {})}
    if driver == "GeoJSON":
        _write_geojson(path, rings, cols, dst, layer, meta)
    else:
        _write_ogr(path, driver, rings, cols, dst, layer, meta)
    logger.info(f"wrote {path}: {len(boxes)} features in {dst if dst.startswith('EPSG') else 'the raster CRS'}")
    return os.fspath(path)


def _json_value(v):
    return v.item() if isinstance(v, np.generic) else v


def _write_geojson(path, rings, cols, crs, layer, meta):
    from .io import atomic_open

    geographic = _is_geographic(crs)
    rounded = np.round(rings, 9 if geographic else 4).tolist()
    names = list(cols)
    rows = zip(*(cols[n].tolist() for n in names)) if names else ([] for _ in rounded)
    features = [{"type": "Feature", "properties": {n: _json_value(v) for n, v in zip(names, row)},
                 "geometry": {"type": "Polygon", "coordinates": [ring]}}
                for ring, row in zip(rounded, rows)]
    collection = {"type": "FeatureCollection", "name": layer, **meta}
    if crs != "EPSG:4326":  # RFC 7946 is WGS84 lon/lat; other CRSs in GDAL's pre-RFC crs member
        collection["crs"] = {"type": "name", "properties": {"name": _ogc_urn(crs)}}
    collection["features"] = features
    with atomic_open(path, "w") as f:
        json.dump(collection, f)


def _ogc_urn(crs):
    if crs.startswith("EPSG:"):
        return f"urn:ogc:def:crs:EPSG::{crs[5:]}"
    raise GeoError(f"GeoJSON can only name a CRS with an EPSG code; write a .gpkg for the CRS {crs[:60]}...")


def _write_ogr(path, driver, rings, cols, crs, layer, meta):
    import pyogrio.raw
    import shapely

    geometry = shapely.to_wkb(shapely.polygons(rings))
    fields, data = [], []
    for name, values in cols.items():
        fields.append(name)
        data.append(values)
    with atomic_output_path(path) as tmp:
        pyogrio.raw.write(tmp, geometry, data, fields, layer=layer, driver=driver, geometry_type="Polygon",
                          crs=crs, dataset_metadata={k: json.dumps(v) if not isinstance(v, str) else v
                                                     for k, v in meta.items() if v is not None})


def write_detections_vector(path, raster, boxes, scores, class_names, dst_crs=None):
    """Write detections on a georeferenced raster as a vector file a GIS opens.

    Args:
        path (str): ``.geojson`` (GeoJSON FeatureCollection) or ``.gpkg`` (GeoPackage).
        raster (str or Georeference): the raster the detections were made on.
        boxes: (N, 4) XYXY in original-raster pixels.
        scores: (N,) float confidences.
        class_names: (N,) str, the class name of each detection.
        dst_crs: CRS to write (e.g. ``"EPSG:4326"``); None: the raster's CRS.

    Each feature is the box's polygon with properties ``class`` (str), ``score`` (float) and
    ``x0, y0, x1, y1`` (the pixel box, float). See the module docstring for the CRS each format carries.

    Returns:
        str: ``path``.

    Raises:
        GeoError: the raster has no georeference, or the extension is neither GeoJSON nor GeoPackage.
    """
    georef = raster if isinstance(raster, Georeference) else read_georeference(raster)
    if georef is None:
        raise GeoError(f"{raster}: not georeferenced (no CRS or no geotransform); cannot write map coordinates")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    props = {"class": np.asarray(class_names, dtype=object).reshape(-1),
             "score": np.asarray(scores, np.float64).reshape(-1)}
    for i, name in enumerate(("x0", "y0", "x1", "y1")):
        props[name] = np.round(boxes[:, i], 2)
    return write_boxes_vector(path, georef, boxes, props, dst_crs=dst_crs, layer="detections")


class VectorLabels(NamedTuple):
    """Labels read from a vector file, in the file's CRS (see :func:`read_vector_labels`).

    Attributes:
        points (np.ndarray): (M, 2) float64 map points of every polygon's vertices, all features.
        feature_index (np.ndarray): (M,) int64, the feature each point belongs to (non-decreasing).
        class_names (np.ndarray): (F,) object (str), the class of each kept feature.
        crs (str): the file's CRS (``crs_name``).
        path (str): the file.
        skipped (dict[str, int]): features left out, by reason (no geometry, not a polygon, no class).
    """

    points: np.ndarray
    feature_index: np.ndarray
    class_names: np.ndarray
    crs: str
    path: str
    skipped: dict


def read_vector_labels(path, class_field="class", layer=None):
    """Read polygon (or box) labels from a vector file GDAL reads (GeoJSON, GeoPackage, shapefile, ...).

    Args:
        path (str): the file.
        class_field (str): the attribute naming each feature's class.
        layer (str or int or None): the layer (GeoPackage); None: the first.

    Returns:
        VectorLabels. Features without geometry, with a non-polygon geometry (points, lines) or with
        an empty class are left out and counted in ``skipped``.

    Raises:
        GeoError: the file is missing, unreadable or has no features; it has no CRS (a shapefile
            without ``.prj``; a GeoJSON without ``crs`` member is WGS84 by RFC 7946); or
            ``class_field`` is not one of its fields (the message lists them).
    """
    import pyogrio
    import pyogrio.raw
    import shapely

    path = os.fspath(path)
    if not os.path.exists(path):
        raise GeoError(f"{path}: label file not found")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as e:
        raise GeoError(f"{path}: cannot be read as a vector file: {e}") from e
    if meta["crs"] is None:
        raise GeoError(f"{path}: has no CRS (a shapefile without .prj?); assign one in a GIS or with "
                       "ogr2ogr -a_srs")
    if wkb is None or len(wkb) == 0:
        raise GeoError(f"{path}: has no features")
    fields = list(meta["fields"])
    if class_field not in fields:
        raise GeoError(f"{path}: no field {class_field!r}; its fields are {fields}; name the class field "
                       "with --class-field")
    geoms = shapely.from_wkb(wkb)
    classes = np.asarray(field_data[fields.index(class_field)], dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    types = np.asarray(shapely.get_type_id(geoms))
    polygonal = np.isin(types, [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    named = np.array([c is not None and str(c).strip() != "" for c in classes], bool)
    keep = ~missing & polygonal & named
    skipped = {"without geometry": int(missing.sum()), "not polygons": int((~missing & ~polygonal).sum()),
               "without a class": int((~missing & polygonal & ~named).sum())}
    skipped = {k: v for k, v in skipped.items() if v}
    points, index = shapely.get_coordinates(geoms[keep], return_index=True)
    return VectorLabels(points, index.astype(np.int64), np.array([str(c) for c in classes[keep]], dtype=object),
                        crs_name(meta["crs"]), path, skipped)


# A box that sticks out of the raster by less than this (reprojection round-off) is not counted as cut.
CLIP_TOLERANCE_PX = 0.01


class PixelBoxes(NamedTuple):
    """Labels as pixel boxes of one raster (see :func:`labels_to_pixel_boxes`).

    Attributes:
        boxes (np.ndarray): (K, 4) float64 XYXY raster pixels, clipped to the raster.
        class_names (np.ndarray): (K,) object (str).
        feature_ids (np.ndarray): (K,) int64, the rows of ``VectorLabels.class_names`` they come from.
        inside (np.ndarray): (F,) bool over all features: the feature overlaps the raster.
        clipped (int): boxes cut by the raster's edge by more than ``CLIP_TOLERANCE_PX`` (kept, clipped).
    """

    boxes: np.ndarray
    class_names: np.ndarray
    feature_ids: np.ndarray
    inside: np.ndarray
    clipped: int


def labels_to_pixel_boxes(labels, georef):
    """Bounding boxes, in a raster's pixels, of labels in any CRS (vectorized).

    Each polygon's vertices are reprojected into the raster's CRS and mapped through the inverse
    affine; its box is their extent. A box entirely outside the raster (or of zero area once clipped)
    is not returned (``inside`` is False for it); a box cut by the raster's edge is clipped.

    Args:
        labels (VectorLabels): from :func:`read_vector_labels`.
        georef (Georeference): the raster.
    """
    n = len(labels.class_names)
    if n == 0:
        return PixelBoxes(np.zeros((0, 4)), labels.class_names, np.zeros(0, np.int64), np.zeros(0, bool), 0)
    px = map_to_pixel(reproject_points(labels.points, labels.crs, georef.crs), georef.transform)
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    np.minimum.at(lo, labels.feature_index, px)
    np.maximum.at(hi, labels.feature_index, px)
    boxes = np.concatenate([lo, hi], axis=1)
    size = np.array([georef.width, georef.height, georef.width, georef.height], np.float64)
    clipped = np.clip(boxes, 0, size)
    inside = np.isfinite(boxes).all(1) & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    was_cut = inside & (np.abs(clipped - boxes) > CLIP_TOLERANCE_PX).any(1)
    ids = np.nonzero(inside)[0]
    return PixelBoxes(clipped[ids], labels.class_names[ids], ids, inside, int(was_cut.sum()))
