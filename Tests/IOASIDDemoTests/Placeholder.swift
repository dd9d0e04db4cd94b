// Tests of the demo scenario live in this target.
