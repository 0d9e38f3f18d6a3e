"""What the dataset plugins share: the plugin contract and registry (``base``), the real datasets'
common knobs and split assembly (``assemble``), list files and the bad-data policy (``lists``),
audio, frame and video decoding (``audio``, ``frames``, ``video``) and the prepared layout
(``prepared``). Nothing here is a dataset: ``trainables.data`` registers the modules beside this
package, never the ones inside it.
"""
