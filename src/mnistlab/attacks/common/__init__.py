"""What the attack forms share: ascent, FGSM/PGD, image selection, figure helpers."""
