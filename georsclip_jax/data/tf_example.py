"""`tf.train.Example` records parsed without TensorFlow, with the protobuf runtime Grain already needs.

The message schema is TensorFlow's `core/example/{example,feature}.proto` (field numbers included),
declared here so prepared TFDS datasets (ArrayRecord files of serialized Examples) can be read in a
JAX-only environment.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _message(file, name, fields, nested=()):
    msg = file.message_type.add(name=name)
    for nested_msg in nested:
        msg.nested_type.add().CopyFrom(nested_msg)
    for number, (field_name, kind, label, type_name, packed) in enumerate(fields, start=1):
        field = msg.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
        if packed:
            field.options.packed = True
    return msg


@functools.cache
def example_class():
    """The `tensorflow.Example` message class, built from its schema at first use."""
    file = descriptor_pb2.FileDescriptorProto(name="georsclip_jax_tf_example.proto", package="tensorflow",
                                              syntax="proto3")
    rep, opt = _FIELD.LABEL_REPEATED, _FIELD.LABEL_OPTIONAL
    _message(file, "BytesList", [("value", _FIELD.TYPE_BYTES, rep, None, False)])
    _message(file, "FloatList", [("value", _FIELD.TYPE_FLOAT, rep, None, True)])
    _message(file, "Int64List", [("value", _FIELD.TYPE_INT64, rep, None, True)])
    _message(file, "Feature", [("bytes_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.BytesList", False),
                               ("float_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.FloatList", False),
                               ("int64_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.Int64List", False)])
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=_FIELD.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=_FIELD.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    _message(file, "Features", [("feature", _FIELD.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", False)],
             nested=[entry])
    _message(file, "Example", [("features", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.Features", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def parse_example(record: bytes) -> dict[str, list]:
    """Feature name -> list of values (bytes, float or int), as tf.io.parse_example would see them."""
    example = example_class()()
    example.ParseFromString(record)
    out = {}
    for name, feature in example.features.feature.items():
        kind = next((k for k in ("bytes_list", "float_list", "int64_list") if feature.HasField(k)), None)
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out
