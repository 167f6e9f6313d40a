"""The README's snippet: declare the two-layer net, derive its gradients, print them, compile, run.

    python examples/quickstart.py
"""
import numpy as np
import graphc as gc

g = gc.Graph("two_layer")
x  = g.input("x", ("n", 784))        # a str is a symbolic dim bound at run time, an int is fixed
t  = g.input("t", ("n", 10))
W1 = g.param("W1", (784, 50)); b1 = g.param("b1", (50,))
W2 = g.param("W2", (50, 10));  b2 = g.param("b2", (10,))

h    = gc.relu(x @ W1 + b1)
a    = gc.einsum("nh,hc->nc", h, W2) + b2
loss = gc.softmax_cross_entropy(a, t)

grads = gc.grad(loss, [W1, b1, W2, b2])   # symbolic: graph nodes, not numbers
print(gc.explain(grads))                   # the derived expressions
fn = gc.compile([loss, *grads])            # a callable; fn.source is the generated code
rng = np.random.default_rng(0)
X = rng.random((100, 784)); T = np.eye(10)[rng.integers(0, 10, 100)]
w1 = 0.01 * rng.standard_normal((784, 50)); bb1 = np.zeros(50); w2 = 0.01 * rng.standard_normal((50, 10)); bb2 = np.zeros(10)
loss_value, dW1, db1, dW2, db2 = fn(x=X, t=T, W1=w1, b1=bb1, W2=w2, b2=bb2)
print(fn.source)
print("loss", loss_value)
