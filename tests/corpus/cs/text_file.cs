uid,blob/path
1,stack.mrcs
