"""The model-card generator's inputs, shipped as package data of ``secfm.model_card``:
``card.yaml`` (prose per model over defaults) and ``template.md`` (``${placeholders}``).
``secfm card`` reads them from here; generated cards (``model_card/NAME/README.md``) sit beside them
in the repository and are not shipped."""
