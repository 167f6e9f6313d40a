"""What the backends' code generators share: the program's shape and signature
(:mod:`.program`) and the sympy-to-``xp`` expression printer (:mod:`.xp_code`)."""
