"""Tensor is defined statically: every attribute is written in some class body of its MRO."""

import ast
import inspect
import pathlib
import pydoc
import re
import textwrap

import ember
from ember.tensor import Tensor


def _body_names(cls) -> set:
    """The names a class body binds (defs, assignments, decorated properties), read from source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names = set()
    for node in tree.body[0].body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_every_attribute_is_written_in_a_class_body():
    # A name attached after the class was made (setattr, Tensor.x = ...) is in some __dict__ of
    # the MRO but in no class body's source.
    implicit = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__firstlineno__"}
    implicit |= {"__static_attributes__", "__slots__"}
    for cls in Tensor.__mro__[:-1]:
        written = _body_names(cls)
        # __hash__ is None in a class body that defines __eq__ (TensorBase's wins in the MRO).
        stray = sorted(
            k for k, v in vars(cls).items() if k not in written | implicit and not (k == "__hash__" and v is None)
        )
        assert not stray, f"{cls.__name__} has attributes set outside its class body: {stray}"


def test_no_method_binding_module_and_no_setattr_on_tensor():
    root = pathlib.Path(ember.__file__).parent
    assert not (root / "_methods.py").exists()
    pattern = re.compile(r"^\s*(Tensor|TensorBase|\w+Ops)\.\w+\s*=|setattr\(\s*(Tensor|TensorBase|\w+Ops)\b", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_methods_are_the_ops_themselves():
    # Operators and same-name methods are the functions (no extra call layer on the hot path).
    assert Tensor.__add__ is ember.add
    assert Tensor.__mul__ is ember.mul
    assert Tensor.sum is ember.sum
    assert Tensor.exp is ember.exp
    assert "exp" in dir(Tensor) and "add_" in dir(Tensor) and "new_zeros" in dir(Tensor)
    doc = pydoc.render_doc(Tensor, renderer=pydoc.plaintext)
    assert (
        " |  exp(input" in doc
        and " |  __add__ = add(input" in doc
        and "Methods inherited from ember._tensor_methods.MathOps" in doc
    )


def test_methods_behave():
    x = ember.tensor([[1.0, -2.0], [3.0, 4.0]])
    assert (1 - x).tolist() == [[0.0, 3.0], [-2.0, -3.0]]
    assert x.T.tolist() == [[1.0, 3.0], [-2.0, 4.0]]
    assert x.where(x > 0, 0.0).tolist() == [[1.0, 0.0], [3.0, 4.0]]
    assert x.clone().t_().tolist() == x.T.tolist()
    assert x.clone().clip_(0, 2).tolist() == [[1.0, 0.0], [2.0, 2.0]]
    assert x.new_zeros(2).dtype == x.dtype and [r.tolist() for r in x] == x.tolist()
    assert 3.0 in x and hash(x) == id(x)
    assert x.softmax(1).shape == (2, 2)


def test_ops_view_of_tensor_makes_full_tensors():
    # The ops import TensorBase (as `Tensor`); making an instance there still gives a full Tensor.
    from ember.ops._base import Tensor as OpsTensor
    from ember.tensor import TensorBase

    assert OpsTensor is TensorBase and isinstance(ember.ones(1), OpsTensor)
    assert type(OpsTensor.__new__(OpsTensor)) is Tensor
    assert type(ember.nn.Parameter(ember.ones(2))) is ember.nn.Parameter
