"""Just enough of the ONNX protobuf schema to split a model, without the ``onnx`` package.

The serving install has onnxruntime and protobuf but not ``onnx`` (a training-side dependency),
so the partitioner reads and writes ``.onnx`` files through message classes built here from a
hand-written descriptor: the ONNX field numbers and wire types (onnx/onnx.proto, IR 10) of the
fields the engine reads. Fields not declared here survive a parse/serialise round trip as
unknown fields, so copied nodes and initializers keep every attribute and payload. The schema
lives in a private descriptor pool under its own package name, so it never clashes with the
``onnx`` package's messages when both are imported (tests compare the two).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "qgnn_engine_onnx"
_T = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED

# message name -> [(field name, number, type, repeated, message type name or None, packed)]
_SCHEMA: dict[str, list[tuple[str, int, int, bool, str | None, bool]]] = {
    "OperatorSetIdProto": [("domain", 1, _T.TYPE_STRING, False, None, False),
                           ("version", 2, _T.TYPE_INT64, False, None, False)],
    "Dimension": [("dim_value", 1, _T.TYPE_INT64, False, None, False),
                  ("dim_param", 2, _T.TYPE_STRING, False, None, False)],
    "TensorShapeProto": [("dim", 1, _T.TYPE_MESSAGE, True, "Dimension", False)],
    "TensorTypeProto": [("elem_type", 1, _T.TYPE_INT32, False, None, False),
                        ("shape", 2, _T.TYPE_MESSAGE, False, "TensorShapeProto", False)],
    "TypeProto": [("tensor_type", 1, _T.TYPE_MESSAGE, False, "TensorTypeProto", False)],
    "ValueInfoProto": [("name", 1, _T.TYPE_STRING, False, None, False),
                       ("type", 2, _T.TYPE_MESSAGE, False, "TypeProto", False)],
    "TensorProto": [("dims", 1, _T.TYPE_INT64, True, None, True),
                    ("data_type", 2, _T.TYPE_INT32, False, None, False),
                    ("float_data", 4, _T.TYPE_FLOAT, True, None, True),
                    ("int32_data", 5, _T.TYPE_INT32, True, None, True),
                    ("int64_data", 7, _T.TYPE_INT64, True, None, True),
                    ("name", 8, _T.TYPE_STRING, False, None, False),
                    ("raw_data", 9, _T.TYPE_BYTES, False, None, False),
                    ("double_data", 10, _T.TYPE_DOUBLE, True, None, True),
                    ("uint64_data", 11, _T.TYPE_UINT64, True, None, True),
                    ("data_location", 14, _T.TYPE_INT32, False, None, False)],
    "AttributeProto": [("name", 1, _T.TYPE_STRING, False, None, False),
                       ("f", 2, _T.TYPE_FLOAT, False, None, False),
                       ("i", 3, _T.TYPE_INT64, False, None, False),
                       ("s", 4, _T.TYPE_BYTES, False, None, False),
                       ("t", 5, _T.TYPE_MESSAGE, False, "TensorProto", False),
                       ("g", 6, _T.TYPE_MESSAGE, False, "GraphProto", False),
                       ("graphs", 11, _T.TYPE_MESSAGE, True, "GraphProto", False),
                       ("type", 20, _T.TYPE_INT32, False, None, False),
                       ("ref_attr_name", 21, _T.TYPE_STRING, False, None, False)],
    "NodeProto": [("input", 1, _T.TYPE_STRING, True, None, False),
                  ("output", 2, _T.TYPE_STRING, True, None, False),
                  ("name", 3, _T.TYPE_STRING, False, None, False),
                  ("op_type", 4, _T.TYPE_STRING, False, None, False),
                  ("attribute", 5, _T.TYPE_MESSAGE, True, "AttributeProto", False),
                  ("domain", 7, _T.TYPE_STRING, False, None, False),
                  ("overload", 8, _T.TYPE_STRING, False, None, False)],
    "GraphProto": [("node", 1, _T.TYPE_MESSAGE, True, "NodeProto", False),
                   ("name", 2, _T.TYPE_STRING, False, None, False),
                   ("initializer", 5, _T.TYPE_MESSAGE, True, "TensorProto", False),
                   ("input", 11, _T.TYPE_MESSAGE, True, "ValueInfoProto", False),
                   ("output", 12, _T.TYPE_MESSAGE, True, "ValueInfoProto", False),
                   ("value_info", 13, _T.TYPE_MESSAGE, True, "ValueInfoProto", False),
                   ("sparse_initializer", 15, _T.TYPE_BYTES, True, None, False)],
    "FunctionProto": [("name", 1, _T.TYPE_STRING, False, None, False),
                      ("domain", 10, _T.TYPE_STRING, False, None, False),
                      ("overload", 13, _T.TYPE_STRING, False, None, False)],
    "StringStringEntryProto": [("key", 1, _T.TYPE_STRING, False, None, False),
                               ("value", 2, _T.TYPE_STRING, False, None, False)],
    "ModelProto": [("ir_version", 1, _T.TYPE_INT64, False, None, False),
                   ("producer_name", 2, _T.TYPE_STRING, False, None, False),
                   ("graph", 7, _T.TYPE_MESSAGE, False, "GraphProto", False),
                   ("opset_import", 8, _T.TYPE_MESSAGE, True, "OperatorSetIdProto", False),
                   ("metadata_props", 14, _T.TYPE_MESSAGE, True, "StringStringEntryProto",
                    False),
                   ("functions", 25, _T.TYPE_MESSAGE, True, "FunctionProto", False)],
}

# ONNX TensorProto.DataType codes the engine meets, and their numpy dtypes.
DTYPES: dict[int, np.dtype] = {1: np.dtype(np.float32), 2: np.dtype(np.uint8),
                               3: np.dtype(np.int8), 4: np.dtype(np.uint16),
                               5: np.dtype(np.int16), 6: np.dtype(np.int32),
                               7: np.dtype(np.int64), 9: np.dtype(np.bool_),
                               10: np.dtype(np.float16), 11: np.dtype(np.float64),
                               12: np.dtype(np.uint32), 13: np.dtype(np.uint64)}
ELEM_TYPE = {dtype: code for code, dtype in DTYPES.items()}
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR = 1, 2, 3, 4
EXTERNAL_DATA = 1  # TensorProto.DataLocation.EXTERNAL


def _build_classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE,
                                              syntax="proto2")
    for message, fields in _SCHEMA.items():
        msg = file.message_type.add(name=message)
        for name, number, ftype, repeated, type_name, packed in fields:
            field = msg.field.add(name=name, number=number, type=ftype,
                                  label=_REPEATED if repeated else _OPTIONAL)
            if type_name is not None:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if packed:
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _SCHEMA}


_CLASSES = _build_classes()
ModelProto = _CLASSES["ModelProto"]
GraphProto = _CLASSES["GraphProto"]
NodeProto = _CLASSES["NodeProto"]
TensorProto = _CLASSES["TensorProto"]
ValueInfoProto = _CLASSES["ValueInfoProto"]
OperatorSetIdProto = _CLASSES["OperatorSetIdProto"]


def load_model(data: bytes) -> Any:
    """Parses serialized ONNX bytes into this module's ModelProto."""
    model = ModelProto()
    model.ParseFromString(data)
    return model


def metadata(model: Any) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict."""
    return {entry.key: entry.value for entry in model.metadata_props}


def tensor_to_array(tensor: Any) -> np.ndarray:
    """A TensorProto's value as a numpy array (raw or typed payload, as ONNX stores them).

    Raises ValueError for element types the engine does not handle and for external data
    (bundles are self-contained files).
    """
    if tensor.data_location == EXTERNAL_DATA:
        raise ValueError(f"tensor {tensor.name!r} keeps its data in an external file; "
                         f"bundles must embed every initializer")
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None:
        raise ValueError(f"tensor {tensor.name!r} has ONNX element type {tensor.data_type}, "
                         f"which the engine does not read")
    shape = tuple(tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<")).astype(
            dtype, copy=False).reshape(shape)
    if dtype == np.float32:
        values: Any = tensor.float_data
    elif dtype == np.float64:
        values = tensor.double_data
    elif dtype in (np.dtype(np.int64),):
        values = tensor.int64_data
    elif dtype in (np.dtype(np.uint32), np.dtype(np.uint64)):
        values = tensor.uint64_data
    elif dtype == np.float16:
        return np.asarray(tensor.int32_data, np.uint16).view(np.float16).reshape(shape)
    else:  # int32 and the narrower integer/bool types travel in int32_data
        values = tensor.int32_data
    return np.asarray(values).astype(dtype).reshape(shape)


def value_info(name: str, elem_type: int, rank: int | None) -> Any:
    """A graph input/output declaration: element type, and ``rank`` symbolic dimensions (an
    unknown shape when None)."""
    info = ValueInfoProto(name=name)
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = elem_type
    if rank is not None:
        tensor_type.shape.SetInParent()
        for axis in range(rank):
            tensor_type.shape.dim.add(dim_param=f"{name}_d{axis}")
    return info


def elem_type_of(ort_type: str) -> int:
    """The ONNX element type code of an onnxruntime type string such as ``tensor(uint8)``."""
    names = {"float": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6,
             "int64": 7, "bool": 9, "float16": 10, "double": 11, "uint32": 12, "uint64": 13}
    inner = ort_type[len("tensor("):-1] if ort_type.startswith("tensor(") else ""
    if inner not in names:
        raise ValueError(f"onnxruntime type {ort_type!r} is not a tensor type the engine handles")
    return names[inner]
